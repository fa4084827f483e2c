package monitor

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/promise"
)

// ErrNotAPromise means a submitted promise is not a promise note signed by
// any configured log.
var ErrNotAPromise = errors.New("not a promise signed by a log this monitor follows")

// PromiseReceipt says which promise the monitor now audits.
type PromiseReceipt struct {
	Log      string    `json:"log"`
	LeafHash []byte    `json:"leaf_hash"`
	Accepted time.Time `json:"accepted"`
	Deadline time.Time `json:"deadline"`
}

// AddPromise verifies a promise note (package promise) with the key of the
// log it names and records it for audit. Either the note itself or the
// log's add-entry answer (JSON with a "promise" field) is accepted. Adding
// the same promise twice is harmless.
func (m *Monitor) AddPromise(ctx context.Context, msg []byte) (*PromiseReceipt, error) {
	if t := bytes.TrimSpace(msg); len(t) > 0 && t[0] == '{' {
		var r struct {
			Promise string `json:"promise"`
		}
		if err := json.Unmarshal(t, &r); err != nil || r.Promise == "" {
			return nil, fmt.Errorf("%w: JSON without a \"promise\" field", ErrNotAPromise)
		}
		msg = []byte(r.Promise)
	}
	for _, ls := range m.logs {
		p, err := promise.Open(msg, ls.origin, ls.verifier)
		if err != nil {
			continue
		}
		if _, err := m.store.addPromise(ctx, ls.id, p.LeafHash, p.Accepted, msg); err != nil {
			return nil, err
		}
		return &PromiseReceipt{Log: ls.origin, LeafHash: p.LeafHash, Accepted: p.Accepted, Deadline: p.Accepted.Add(m.cfg.MergeDelay)}, nil
	}
	return nil, ErrNotAPromise
}

// ingestPromiseDir records every promise file in PromiseDir and removes it
// once stored; a file that is not a valid promise is renamed to
// <name>.rejected so it is not read again.
func (m *Monitor) ingestPromiseDir(ctx context.Context) error {
	if m.cfg.PromiseDir == "" {
		return nil
	}
	des, err := os.ReadDir(m.cfg.PromiseDir)
	if err != nil {
		return fmt.Errorf("promise directory: %w", err)
	}
	var errs []error
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".rejected") {
			continue
		}
		path := filepath.Join(m.cfg.PromiseDir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err = m.AddPromise(ctx, b)
		switch {
		case errors.Is(err, ErrNotAPromise):
			m.log.Warn("promise file rejected", slog.String("file", name))
			if err := os.Rename(path, path+".rejected"); err != nil {
				errs = append(errs, err)
			}
		case err != nil:
			errs = append(errs, err)
		default:
			if err := os.Remove(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// auditPromises checks each pending promise of the log against its latest
// verified checkpoint with an inclusion proof. A promise whose entry is not
// included once its merge delay has passed is broken.
func (m *Monitor) auditPromises(ctx context.Context, ls *logState) error {
	pending, err := m.store.pendingPromises(ctx, ls.id)
	if err != nil {
		return err
	}
	m.metrics.pendingPromises.WithLabelValues(ls.origin).Set(float64(len(pending)))
	v := ls.verifiedSnapshot()
	now := m.now()
	for _, p := range pending {
		deadline := p.Accepted.Add(m.cfg.MergeDelay)
		late := now.After(deadline)
		if v == nil {
			if late {
				if err := m.brokenPromise(ctx, ls, p, deadline, nil); err != nil {
					return err
				}
			}
			continue
		}
		if v.Size <= p.CheckedSize && !late {
			continue // nothing new to look at
		}
		cp := checkpoint.Checkpoint{Origin: ls.origin, Size: v.Size, Hash: v.Root}
		var idx uint64
		var err error
		if v.Size == 0 {
			// The empty tree includes nothing; there is no proof to ask for.
			err = &client.HTTPError{Status: http.StatusNotFound, Message: "empty tree"}
		} else {
			idx, err = ls.client.VerifyInclusion(ctx, p.LeafHash, cp)
		}
		switch {
		case err == nil:
			if err := m.store.setPromise(ctx, ls.id, p.LeafHash, promiseKept, u64(idx), v.Size); err != nil {
				return err
			}
		case client.StatusOf(err) == http.StatusNotFound && late:
			if err := m.brokenPromise(ctx, ls, p, deadline, v); err != nil {
				return err
			}
		case client.StatusOf(err) == http.StatusNotFound:
			if err := m.store.setPromise(ctx, ls.id, p.LeafHash, promisePending, nil, v.Size); err != nil {
				return err
			}
		default:
			return fmt.Errorf("log %s: inclusion proof for a promised entry: %w", ls.origin, err)
		}
	}
	return nil
}

func (m *Monitor) brokenPromise(ctx context.Context, ls *logState, p storedPromise, deadline time.Time, v *storedCheckpoint) error {
	h := base64.StdEncoding.EncodeToString(p.LeafHash)
	var a Alert
	if v == nil {
		a = newAlert(KindBrokenPromise, ls.origin, h,
			fmt.Sprintf("the log promised on %s to include leaf %s by %s and has published no checkpoint since",
				p.Accepted.UTC().Format(time.RFC3339), h, deadline.UTC().Format(time.RFC3339)))
	} else {
		a = newAlert(KindBrokenPromise, ls.origin, h,
			fmt.Sprintf("the log promised on %s to include leaf %s by %s; its checkpoint of size %d does not include it",
				p.Accepted.UTC().Format(time.RFC3339), h, deadline.UTC().Format(time.RFC3339), v.Size))
	}
	a.Evidence = []Evidence{{Source: "promise", Note: string(p.Note)}}
	if v != nil {
		a.Evidence = append(a.Evidence, Evidence{Source: "log", Note: string(v.Note)})
	}
	if err := m.raise(ctx, a); err != nil {
		return err
	}
	var size uint64
	if v != nil {
		size = v.Size
	}
	return m.store.setPromise(ctx, ls.id, p.LeafHash, promiseBroken, nil, size)
}
