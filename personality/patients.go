package personality

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/entry"
)

// patientRow is one index row: a leaf about a patient.
type patientRow struct {
	pseudonym string
	index     uint64
}

// indexer keeps the pseudonym index up to date with the signed tree. It
// reads leaves the log already validated, so it only extracts the
// pseudonym; a leaf it cannot read is skipped with a warning (the monitor
// is what judges leaves).
type indexer struct {
	l *Log
}

// catchUp indexes every leaf below the latest signed checkpoint. With
// batched sequencing the sequencer indexes each batch as it commits it, and
// this only catches up (from carelog_leaves, up to the last sequenced
// entry) where the index fell behind, for instance on a tree written before.
func (ix *indexer) catchUp(ctx context.Context) error {
	l := ix.l
	size := l.latestSize()
	read := l.leaves
	if l.seq != nil {
		n, err := l.seq.nextIndex(ctx)
		if err != nil {
			return err
		}
		size, read = n, l.seq.committedLeaves
	}
	next, err := l.store.IndexPosition(ctx, l.origin)
	if err != nil {
		return err
	}
	for next < size && ctx.Err() == nil {
		end := min(size, next+1000)
		leaves, err := read(ctx, next, end)
		if err != nil {
			return err
		}
		var rows []patientRow
		for _, lf := range leaves {
			ev, err := entry.ParseEvent(entry.Text(lf.Data))
			if err != nil {
				l.logger.Warn("indexer: leaf is not a valid entry", slog.Uint64("index", lf.Index))
				continue
			}
			if ev.Patient != "" {
				rows = append(rows, patientRow{pseudonym: ev.Patient, index: lf.Index})
			}
		}
		if err := l.store.AddToIndex(ctx, l.origin, next, end, rows); err != nil {
			if errors.Is(err, errCheckpointRace) {
				return nil // the sequencer indexed meanwhile; next round
			}
			return err
		}
		next = end
	}
	return nil
}

func (ix *indexer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := ix.catchUp(ctx); err != nil && ctx.Err() == nil {
			ix.l.logger.Warn("indexer: behind", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *Log) handlePatientEvents(w http.ResponseWriter, r *http.Request) error {
	pseudonym := r.PathValue("pseudonym")
	size, haveSize, err := uintParam(r, "size", false)
	if err != nil {
		return err
	}
	if !haveSize {
		size = l.latestSize()
	}
	after, haveAfter, err := uintParam(r, "after", false)
	if err != nil {
		return err
	}
	from := uint64(0)
	if haveAfter {
		from = after + 1
	}
	ev, err := l.PatientEvents(r.Context(), pseudonym, size, from)
	if err != nil {
		return err
	}
	api.WriteJSON(w, http.StatusOK, ev)
	return nil
}

// PatientEvents lists a patient's entries with index >= from in the tree of
// the given size, each with its inclusion proof against that size. The
// caller verifies the proofs against a checkpoint of that size.
func (l *Log) PatientEvents(ctx context.Context, pseudonym string, size, from uint64) (*api.PatientEvents, error) {
	if err := entry.CheckPseudonym(pseudonym); err != nil {
		return nil, errorf(http.StatusBadRequest, "patient pseudonym %s", err)
	}
	if size == 0 {
		return &api.PatientEvents{Size: 0, Events: []api.PatientEvent{}}, nil
	}
	if err := l.checkSize(size); err != nil {
		return nil, err
	}
	indexed, err := l.store.IndexPosition(ctx, l.origin)
	if err != nil {
		return nil, err
	}
	if indexed < size {
		// The indexer runs on a timer; catch up now rather than send the
		// patient away (it is idempotent and safe beside the background one).
		if err := (&indexer{l: l}).catchUp(ctx); err != nil && ctx.Err() == nil {
			l.logger.Warn("indexer: behind", slog.Any("error", err))
		}
		if indexed, err = l.store.IndexPosition(ctx, l.origin); err != nil {
			return nil, err
		}
	}
	if indexed < size {
		return nil, errorf(http.StatusServiceUnavailable, "the patient index has reached size %d of %d; try again shortly", indexed, size)
	}
	idx, err := l.store.PatientIndices(ctx, l.origin, pseudonym, from, size, api.MaxPatientEventsPerRequest+1)
	if err != nil {
		return nil, err
	}
	out := &api.PatientEvents{Size: size, Events: []api.PatientEvent{}}
	if len(idx) > api.MaxPatientEventsPerRequest {
		idx = idx[:api.MaxPatientEventsPerRequest]
		next := idx[len(idx)-1]
		out.Next = &next
	}
	for _, i := range idx {
		leaf, err := l.leaves(ctx, i, i+1)
		if err != nil {
			return nil, err
		}
		p, err := l.tiler.InclusionProof(ctx, i, size)
		if err != nil {
			return nil, fmt.Errorf("entry %d: proof from tiles: %w", i, err)
		}
		out.Events = append(out.Events, api.PatientEvent{Index: i, Data: leaf[0].Data, Proof: nonNil(p)})
	}
	return out, nil
}
