package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/submitter"
)

// checked is one replayed entry after the checks that need nothing but the
// entry itself; workers compute these in parallel.
type checked struct {
	Index    uint64
	LeafHash []byte
	// Entry is the verified entry, nil if err is set.
	Entry *entry.Entry
	// Event is the parsed event: set for verified entries and for entries
	// that are authentic but signed outside their key's validity window.
	Event *entry.Event
	// Submitter names the signer where it is known.
	Submitter string
	Err       error
}

// checkEntries hashes and validates entries with the shared entry package:
// submitter signature, registered key, validity window at the event's time,
// schema. It is the CPU-heavy part of a replay.
func checkEntries(es []api.Entry, reg *submitter.Registry) []checked {
	out := make([]checked, len(es))
	for i, e := range es {
		c := checked{Index: e.Index, LeafHash: checkpoint.LeafHash(e.Data)}
		c.Entry, c.Err = entry.OpenForReplay(e.Data, reg)
		switch {
		case c.Err == nil:
			c.Event, c.Submitter = c.Entry.Event, c.Entry.Submitter
		case errors.Is(c.Err, submitter.ErrKeyNotValid):
			// OpenForReplay checks the window last, after the signature, the
			// schema and source.system = signer: the event is authentic.
			if ev, err := entry.ParseEvent(entry.Text(e.Data)); err == nil {
				c.Event, c.Submitter = ev, ev.Source.System
			}
		}
		out[i] = c
	}
	return out
}

// ruleEngine applies the watch rules in log order and keeps the state the
// snooping rule needs; the state is persisted with each batch, so a resumed
// replay reaches the same verdicts as an uninterrupted one.
type ruleEngine struct {
	origin  string
	rules   Rules
	watched map[string]bool
	state   ruleState
}

type ruleState struct {
	// Latest is the latest event time seen, Unix nanoseconds.
	Latest int64                   `json:"latest,omitempty"`
	Actors map[string]*actorWindow `json:"actors,omitempty"`
}

// actorWindow is what one actor touched within the snooping window.
type actorWindow struct {
	Seen []access `json:"seen"`
	// Quiet is the event time until which this actor does not alert again.
	Quiet int64 `json:"quiet,omitempty"`
}

type access struct {
	T int64  `json:"t"`
	P string `json:"p"`
}

func newRuleEngine(origin string, rules Rules, state []byte) (*ruleEngine, error) {
	r := &ruleEngine{origin: origin, rules: rules, watched: map[string]bool{}}
	for _, p := range rules.WatchedPatients {
		r.watched[p] = true
	}
	if len(state) > 0 {
		if err := json.Unmarshal(state, &r.state); err != nil {
			return nil, fmt.Errorf("monitor state: watch rules: %w", err)
		}
	}
	if r.state.Actors == nil {
		r.state.Actors = map[string]*actorWindow{}
	}
	return r, nil
}

// marshal returns the state to persist, dropping actors with nothing left
// in the window.
func (r *ruleEngine) marshal() ([]byte, error) {
	w := r.rules.Snooping.Window.Nanoseconds()
	for k, a := range r.state.Actors {
		a.prune(r.state.Latest - w)
		if len(a.Seen) == 0 && a.Quiet <= r.state.Latest {
			delete(r.state.Actors, k)
		}
	}
	return json.Marshal(r.state)
}

func (a *actorWindow) prune(cutoff int64) {
	keep := a.Seen[:0]
	for _, s := range a.Seen {
		if s.T > cutoff {
			keep = append(keep, s)
		}
	}
	a.Seen = keep
}

// apply returns the alerts for one entry and the pseudonym index row, if
// any. Entries are applied in index order.
func (r *ruleEngine) apply(c checked) ([]Alert, *patientRow) {
	var alerts []Alert
	idx := strconv.FormatUint(c.Index, 10)
	if c.Err != nil {
		if c.Event != nil && errors.Is(c.Err, submitter.ErrKeyNotValid) {
			if r.rules.KeyValidity {
				a := newAlert(KindKeyValidity, r.origin, idx,
					fmt.Sprintf("entry %d is signed by %s with a key outside its validity window at the event's time: %v", c.Index, c.Submitter, c.Err))
				a.Index, a.Submitter = u64(c.Index), c.Submitter
				alerts = append(alerts, a)
			}
		} else {
			// The error texts of package entry never carry field values.
			a := newAlert(KindBadEntry, r.origin, idx, fmt.Sprintf("entry %d does not verify: %v", c.Index, c.Err))
			a.Index, a.Submitter = u64(c.Index), c.Submitter
			return append(alerts, a), nil
		}
	}
	ev := c.Event
	actor := ev.Actor.Org + "/" + ev.Actor.ID
	describe := func(a Alert) Alert {
		a.Index, a.Patient, a.Actor, a.Submitter = u64(c.Index), ev.Patient, actor, c.Submitter
		return a
	}
	if r.rules.Emergency && (ev.Event == "break-glass" || entry.EmergencyPurposes[ev.Purpose]) {
		alerts = append(alerts, describe(newAlert(KindEmergencyAccess, r.origin, idx,
			fmt.Sprintf("entry %d: emergency access (event %s, purpose %s) by %s", c.Index, ev.Event, ev.Purpose, actor))))
	}
	if ev.Patient != "" && r.watched[ev.Patient] {
		alerts = append(alerts, describe(newAlert(KindWatchedPatient, r.origin, idx,
			fmt.Sprintf("entry %d: access to a watched patient (event %s, purpose %s) by %s", c.Index, ev.Event, ev.Purpose, actor))))
	}
	if n, fired := r.snoop(actor, ev); fired {
		a := newAlert(KindSnooping, r.origin, actor+"|"+idx,
			fmt.Sprintf("entry %d: %s touched %d distinct patients within %s (limit %d)", c.Index, actor, n, r.rules.Snooping.Window, r.rules.Snooping.MaxPatients))
		a.Index, a.Actor, a.Submitter = u64(c.Index), actor, c.Submitter
		alerts = append(alerts, a)
	}
	var row *patientRow
	if ev.Patient != "" {
		row = &patientRow{Pseudonym: ev.Patient, Index: c.Index}
	}
	return alerts, row
}

// snoop records the access and reports whether the actor has now touched
// more than MaxPatients distinct patients within the window ending at the
// latest event time seen. After an alert the actor is quiet for a window.
func (r *ruleEngine) snoop(actor string, ev *entry.Event) (int, bool) {
	s := r.rules.Snooping
	if s.MaxPatients <= 0 || s.Window <= 0 || ev.Patient == "" {
		return 0, false
	}
	t := ev.When().UnixNano()
	r.state.Latest = max(r.state.Latest, t)
	a := r.state.Actors[actor]
	if a == nil {
		a = &actorWindow{}
		r.state.Actors[actor] = a
	}
	a.Seen = append(a.Seen, access{T: t, P: ev.Patient})
	a.prune(r.state.Latest - s.Window.Nanoseconds())
	distinct := map[string]bool{}
	for _, x := range a.Seen {
		distinct[x.P] = true
	}
	if len(distinct) <= s.MaxPatients || t < a.Quiet {
		return len(distinct), false
	}
	a.Quiet = t + s.Window.Nanoseconds()
	return len(distinct), true
}
