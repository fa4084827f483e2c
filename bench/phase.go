package bench

import (
	"context"
	"database/sql"
	"time"
)

// Phase is what the machine did during one measured window: CPU time of
// every watched component and of the whole machine, and the database
// server's status counters, at the window's opening and closing.
type Phase struct {
	Ops        int64 // operations measured in the window (set by the caller)
	from, to   CPUSnapshot
	sql0, sql1 ServerStatus
}

// meter returns a probe for a measurement's window that fills p.
func meter(ctx context.Context, db *sql.DB, p *Phase, cs []*Component) func(end bool) {
	return func(end bool) {
		st, _ := ReadServerStatus(ctx, db)
		if end {
			p.to, p.sql1 = SnapshotCPU(cs...), st
		} else {
			p.from, p.sql0 = SnapshotCPU(cs...), st
		}
	}
}

// Cores is how many cores each component used in the window (see Cores).
func (p *Phase) Cores() map[string]float64 {
	if p == nil || p.to.At.IsZero() {
		return nil
	}
	return Cores(p.from, p.to)
}

// MicrosPerOp is each component's CPU time per operation, in µs.
func (p *Phase) MicrosPerOp() map[string]float64 {
	out := map[string]float64{}
	if p == nil || p.Ops <= 0 || p.to.At.IsZero() {
		return out
	}
	for name, t := range p.to.CPU {
		out[name] = float64((t-p.from.CPU[name])/time.Microsecond) / float64(p.Ops)
	}
	return out
}

// SQLPerOp is the growth of the server's status counters per operation.
func (p *Phase) SQLPerOp() map[string]float64 {
	if p == nil || p.sql0 == nil || p.sql1 == nil {
		return nil
	}
	return p.sql0.Per(p.sql1, p.Ops)
}
