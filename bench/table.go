package bench

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// Targets of issue 6.
const (
	TargetIngestRatio = 3.0
	TargetMergeP99    = time.Second
	TargetCosignedP99 = 2 * time.Second
	TargetProofRatio  = 20.0
)

// WriteTable writes the run's one results table (Markdown).
func (r *Result) WriteTable(w io.Writer) {
	c := r.Config
	rows := [][]string{{"#", "measurement", "result", "target", "met"}}
	row := func(cells ...string) { rows = append(rows, cells) }
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	q := r.QueueLeaf
	row("1", fmt.Sprintf("raw Trillian QueueLeaf, %d clients, %d B leaves, signer batch %d every %s: queued", q.Clients, LeafSize, RefSequencerBatch, RefSequencerInterval),
		perS(q.Queued)+errs(q.Queued), "reference", "")
	row("1", "… integrated by Trillian's signer in the same window", perS(q.Integrated), "", "")
	row("2", fmt.Sprintf("carelog ingest, %d clients: signed entries (mean %d B) validated, POST /add-entry → 200 with a durable index", c.IngestClients, r.EntrySize),
		fmt.Sprintf("%s = **%.2f×** (1) queued%s", perS(r.Ingest), r.IngestRatio(), errs(r.Ingest)),
		fmt.Sprintf("≥ %.0f×", TargetIngestRatio), met(r.IngestRatio() >= TargetIngestRatio))
	a := r.AfterIngest
	row("2", "… meanwhile the cosigned checkpoint grew at; backlog left (sequenced / fed to Trillian / signed / cosigned), caught up in",
		fmt.Sprintf("%s; %s / %s / %s / %s; %s", perS(r.IngestIntegrated), thousands(float64(a.Sequenced)), thousands(float64(a.Fed)),
			thousands(float64(a.Signed)), thousands(float64(a.CosignedTop)), r.Drained.Round(100*time.Millisecond)), "", "")
	d := r.Delays
	unres := ""
	if d.UnresolvedMerge+d.UnresolvedCosigned > 0 {
		unres = fmt.Sprintf(" (%d / %d never resolved)", d.UnresolvedMerge, d.UnresolvedCosigned)
	}
	row("3", fmt.Sprintf("merge delay, ack → inclusion proof served, at %.0f/s (half of 2; achieved %.0f/s, %d entries): p50 / p99 / max",
		d.Target, d.Achieved.PerSecond(), d.Merge.Count),
		delays(d.Merge)+unres, "p99 ≤ "+msf(TargetMergeP99), met(d.Merge.Count > 0 && d.Merge.P99 <= TargetMergeP99 && d.UnresolvedMerge == 0))
	row("4", "ack → 2-of-3 cosigned checkpoint served by /checkpoint (3 witnesses): p50 / p99 / max",
		delays(d.Cosigned), "p99 ≤ "+msf(TargetCosignedP99), met(d.Cosigned.Count > 0 && d.Cosigned.P99 <= TargetCosignedP99 && d.UnresolvedCosigned == 0))
	row("5", fmt.Sprintf("inclusion proofs, %d clients, tree of %d, random leaves, each verified: carelog GET /proof/inclusion (by leaf hash)", c.Clients, c.Tree),
		fmt.Sprintf("%s = **%.1f×** raw%s", perS(r.Proofs), r.ProofRatio(), errs(r.Proofs)),
		fmt.Sprintf("≥ %.0f×", TargetProofRatio), met(r.ProofRatio() >= TargetProofRatio))
	row("5", "… raw Trillian GetInclusionProof (by index) on a PREORDERED_LOG tree of the same size", perS(r.RefProofs)+errs(r.RefProofs), "reference", "")
	row("5", "… (how that tree was filled: AddSequencedLeaves, batches of 1000, 2 in flight)", perS(r.Fill), "", "")
	if r.Log != nil {
		var ws []string
		for _, w := range r.Witnesses {
			ws = append(ws, mib(w.PeakRSS()))
		}
		// Bounded: the log's memory does not grow with the tree. Between
		// the end of (2) and the end of the run the tree grows by half or
		// more; allow noise (GC timing) of a quarter plus 16 MiB.
		flat := r.LogRSS[1] <= r.LogRSS[0]+r.LogRSS[0]/4+16<<20
		row("6", "peak RSS (VmHWM): carelog-log / each carelog-witness", mib(r.Log.PeakRSS())+" / "+strings.Join(ws, " / "), "bounded", "")
		row("6", "carelog-log RSS after (2) / at the end (the tree grew meanwhile through (3) and (5))", mib(r.LogRSS[0])+" / "+mib(r.LogRSS[1]),
			"flat", met(flat))
	}
	row("6", "log database size after (2) / at the end; InnoDB buffer pool", fmt.Sprintf("%s / %s; %s", mib(r.DBSize[0]), mib(r.DBSize[1]), mib(r.BufferPool)), "", "")
	if r.MariaDBD != nil {
		peak, base := r.MariaDBD.SampledPeakRSS()
		row("6", "peak RSS: mariadbd during the run (at its start)", fmt.Sprintf("%s (%s)", mib(peak), mib(base)), "", "")
	}
	row("6", "peak RSS: this harness (load generator, raw Trillian, signed events)", mib(r.Harness.PeakRSS()), "", "")
	n := runtime.NumCPU()
	row("–", "cost per queued leaf in (1): CPU of the harness (in-process Trillian) / mariadbd; SQL per leaf (server-wide)",
		r.cost("1", "harness", "mariadbd"), "", "")
	row("–", "cost per entry in (2): CPU of carelog-log / mariadbd / harness; SQL per entry",
		r.cost("2", "log", "mariadbd", "harness"), "", "")
	row("–", "cost per proof in (5), raw Trillian: CPU of the harness (in-process Trillian) / mariadbd; SQL per proof",
		r.cost("5 raw", "harness", "mariadbd"), "", "")
	row("–", "cost per proof in (5), carelog: CPU of carelog-log / mariadbd / harness; SQL per proof",
		r.cost("5", "log", "mariadbd", "harness"), "", "")
	row("–", "cost per entry in (3), from acknowledgement to cosigned: CPU of carelog-log / mariadbd / harness; SQL per entry",
		r.cost("3", "log", "mariadbd", "harness"), "", "")
	row("–", fmt.Sprintf("cores (of %d) used in (3): carelog-log / mariadbd / 3 witnesses / harness", n),
		cores(r.Phases["3"].Cores(), "log", "mariadbd", "witnesses", "harness"), "", "")
	var others []string
	for _, ph := range []string{"1", "5 raw", "2", "3", "5"} {
		others = append(others, cores(r.Phases[ph].Cores(), Others))
	}
	row("–", "cores used by other processes in (1) / (5) raw / (2) / (3) / (5)", strings.Join(others, " / "), "≈ 0", "")

	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, cell := range r {
			width[i] = max(width[i], len([]rune(cell)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, cell := range cells {
			b.WriteString(" " + cell + strings.Repeat(" ", width[i]-len([]rune(cell))) + " |")
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintf(w, "carelog bench: %s, MariaDB %s, log flags %q, %s in all\n\n", r.Machine, r.MariaDB, c.LogArgs, r.Elapsed.Round(time.Second))
	line(rows[0])
	sep := make([]string, len(width))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
	worst := 0.0
	for _, p := range r.Phases {
		worst = max(worst, p.Cores()[Others])
	}
	if worst > 0.2 {
		fmt.Fprintf(w, "\nWARNING: other processes on this machine used up to %.2f cores during a measurement: these numbers are disturbed.\n", worst)
	}
	if r.OnTheSpot > 0 {
		fmt.Fprintf(w, "\n(%d entries had to be signed during measurement: the harness's CPU competed with the log)\n", r.OnTheSpot)
	}
}

// cost says what one operation of a phase cost: CPU µs of each named
// component, and the database server's work.
func (r *Result) cost(phase string, names ...string) string {
	p := r.Phases[phase]
	us := p.MicrosPerOp()
	var parts []string
	for _, n := range names {
		if v, ok := us[n]; ok {
			parts = append(parts, fmt.Sprintf("%.0f", v))
		} else {
			parts = append(parts, "n/a")
		}
	}
	out := strings.Join(parts, " / ") + " µs"
	if q := p.SQLPerOp(); q != nil {
		out += fmt.Sprintf("; %.1f statements, %.1f prepares, %.2f fsyncs, %.2f page reads from disk",
			q["Questions"], q["Com_stmt_prepare"], q["Innodb_data_fsyncs"], q["Innodb_buffer_pool_reads"])
	}
	return out
}

func perS(r Rate) string { return fmt.Sprintf("%s/s", thousands(r.PerSecond())) }

func errs(r Rate) string {
	if r.Errors == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d failed: %v)", r.Errors, r.FirstError)
}

func delays(d Delays) string {
	if d.Count == 0 {
		return "none measured"
	}
	return fmt.Sprintf("%s / **%s** / %s", msf(d.P50), msf(d.P99), msf(d.Max))
}

func msf(d time.Duration) string { return thousands(float64(d.Milliseconds())) + " ms" }

func mib(b uint64) string { return fmt.Sprintf("%d MiB", (b+(1<<19))>>20) }

func cores(m map[string]float64, names ...string) string {
	var out []string
	for _, n := range names {
		if n == "witnesses" {
			sum := 0.0
			for k, v := range m {
				if strings.HasPrefix(k, "witness-") {
					sum += v
				}
			}
			out = append(out, fmt.Sprintf("%.2f", sum))
			continue
		}
		v, ok := m[n]
		if !ok {
			out = append(out, "n/a")
			continue
		}
		out = append(out, fmt.Sprintf("%.2f", v))
	}
	return strings.Join(out, " / ")
}

// thousands formats a rounded number with thin separators: 12,345.
func thousands(f float64) string {
	s := fmt.Sprintf("%.0f", f)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
