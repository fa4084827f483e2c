package entry_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

const system = "ehr.test-hospital"

// validEvent returns a valid event as a generic JSON object, so tests can
// break it in every way.
func validEvent() map[string]any {
	return map[string]any{
		"v": 1, "id": "0b6f1f3e-8c1a-4f57-9d43-2b1d3f9e6a10", "time": "2026-11-20T10:15:00Z",
		"action": "R", "event": "read", "outcome": 0,
		"actor":    map[string]any{"id": "staff-0042", "role": "physician", "org": "org-1"},
		"patient":  "lXpDACJW3KEJwcs4D2nBAbc48V_-KloCYCtq3M3Pqe0",
		"purpose":  "TREAT",
		"resource": map[string]any{"type": "Observation", "id": "obs-123", "digest": strings.Repeat("ab", 32)},
		"source":   map[string]any{"system": system, "site": "site-1"},
	}
}

func line(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseEventValid(t *testing.T) {
	e, err := entry.ParseEvent(line(t, validEvent()))
	if err != nil {
		t.Fatal(err)
	}
	if e.Actor.ID != "staff-0042" || e.Resource.Type != "Observation" || !e.When().Equal(time.Date(2026, 11, 20, 10, 15, 0, 0, time.UTC)) {
		t.Fatalf("parsed %+v", e)
	}
}

func TestParseEventRefusals(t *testing.T) {
	type mod func(m map[string]any)
	del := func(path ...string) mod {
		return func(m map[string]any) {
			for _, p := range path[:len(path)-1] {
				m = m[p].(map[string]any)
			}
			delete(m, path[len(path)-1])
		}
	}
	set := func(v any, path ...string) mod {
		return func(m map[string]any) {
			for _, p := range path[:len(path)-1] {
				m = m[p].(map[string]any)
			}
			m[path[len(path)-1]] = v
		}
	}
	cases := []struct {
		name  string
		mod   mod
		field string // the field the error must name
	}{
		// every required field missing
		{"missing v", del("v"), "v"},
		{"missing id", del("id"), "id"},
		{"missing time", del("time"), "time"},
		{"missing action", del("action"), "action"},
		{"missing event", del("event"), "event"},
		{"missing outcome", del("outcome"), "outcome"},
		{"missing actor", del("actor"), "actor"},
		{"missing actor.id", del("actor", "id"), "actor.id"},
		{"missing actor.role", del("actor", "role"), "actor.role"},
		{"missing actor.org", del("actor", "org"), "actor.org"},
		{"missing purpose", del("purpose"), "purpose"},
		{"missing resource", del("resource"), "resource"},
		{"missing resource.type", del("resource", "type"), "resource.type"},
		{"missing resource.id", del("resource", "id"), "resource.id"},
		{"missing source", del("source"), "source"},
		{"missing source.system", del("source", "system"), "source.system"},
		{"missing patient on a read", del("patient"), "patient"},
		// every wrong type
		{"v as string", set("1", "v"), "v"},
		{"v as float", set(1.5, "v"), "v"},
		{"id as number", set(7, "id"), "id"},
		{"time as number", set(1700000000, "time"), "time"},
		{"action as array", set([]any{"R"}, "action"), "action"},
		{"event as bool", set(true, "event"), "event"},
		{"outcome as string", set("0", "outcome"), "outcome"},
		{"outcome as null", set(nil, "outcome"), "outcome"},
		{"actor as string", set("staff-0042", "actor"), "actor"},
		{"actor.id as number", set(42, "actor", "id"), "actor.id"},
		{"patient as object", set(map[string]any{}, "patient"), "patient"},
		{"purpose as number", set(1, "purpose"), "purpose"},
		{"resource as array", set([]any{}, "resource"), "resource"},
		{"resource.digest as number", set(5, "resource", "digest"), "resource.digest"},
		{"source as number", set(3, "source"), "source"},
		{"source.site as bool", set(false, "source", "site"), "source.site"},
		// unknown fields and free text
		{"unknown top-level field", set("x", "comment"), "comment"},
		{"unknown nested field", set("Dr. Jane Smith", "actor", "name"), "actor.name"},
		{"free text in actor.id", set("Jane Smith", "actor", "id"), "actor.id"},
		{"free text in resource.id", set("lab result: HIV positive", "resource", "id"), "resource.id"},
		{"free text in role", set("head of cardiology", "actor", "role"), "actor.role"},
		{"name as patient", set("Jane Smith", "patient"), "patient"},
		{"free text in site", set("ward 3, bed 2", "source", "site"), "source.site"},
		// values outside the rules
		{"v 2", set(2, "v"), "v"},
		{"id not a UUID", set("event-1", "id"), "id"},
		{"time not UTC", set("2026-11-20T10:15:00+01:00", "time"), "time"},
		{"time not RFC 3339", set("20/11/2026 10:15", "time"), "time"},
		{"action unknown", set("X", "action"), "action"},
		{"event unknown", set("peek", "event"), "event"},
		{"outcome unknown", set(3, "outcome"), "outcome"},
		{"purpose unknown", set("CURIOSITY", "purpose"), "purpose"},
		{"resource type lower case", set("observation", "resource", "type"), "resource.type"},
		{"digest not hex", set("zz", "resource", "digest"), "resource.digest"},
		{"empty actor.org", set("", "actor", "org"), "actor.org"},
		{"identifier too long", set(strings.Repeat("a", 129), "actor", "id"), "actor.id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validEvent()
			c.mod(m)
			_, err := entry.ParseEvent(line(t, m))
			var fe *entry.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a FieldError naming %q", err, c.field)
			}
			if fe.Field != c.field {
				t.Fatalf("error names field %q, want %q (%v)", fe.Field, c.field, err)
			}
		})
	}
}

func TestParseEventMalformed(t *testing.T) {
	valid := line(t, validEvent())
	cases := map[string][]byte{
		"invalid UTF-8":   append(bytes.Clone(valid[:len(valid)-1]), []byte(`,"x":"\xff"}`)...),
		"two lines":       bytes.Replace(valid, []byte(`,"id"`), []byte(",\n\"id\""), 1),
		"not an object":   []byte(`[1,2,3]`),
		"trailing data":   append(bytes.Clone(valid), []byte(` {}`)...),
		"truncated":       valid[:len(valid)-3],
		"duplicate field": bytes.Replace(valid, []byte(`{"action"`), []byte(`{"action":"D","action"`), 1),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := entry.ParseEvent(b)
			var fe *entry.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a FieldError", err)
			}
		})
	}
	big := validEvent()
	big["resource"].(map[string]any)["id"] = strings.Repeat("a", 100)
	b := line(t, big)
	b = append(b[:len(b)-1], []byte(`,"pad":"`+strings.Repeat("x", entry.MaxEventSize)+`"}`)...)
	if _, err := entry.ParseEvent(b); !errors.Is(err, entry.ErrTooLarge) {
		t.Fatalf("oversize: got %v, want ErrTooLarge", err)
	}
}

func TestErrorsCarryNoValues(t *testing.T) {
	m := validEvent()
	m["actor"].(map[string]any)["id"] = "Jane Smith SECRET"
	_, err := entry.ParseEvent(line(t, m))
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error %q must refuse the value without repeating it", err)
	}
}

type keys struct {
	reg    *submitter.Registry
	signer note.Signer
	other  note.Signer // registered under another name
	rogue  note.Signer // unregistered key with the right name
}

func newKeys(t *testing.T, window *[2]time.Time) keys {
	t.Helper()
	mk := func(name string) (note.Signer, string) {
		skey, vkey, err := submitter.GenerateEd25519(name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := submitter.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		return s, vkey
	}
	s, v := mk(system)
	o, ov := mk("other.system")
	r, _ := mk(system)
	k := submitter.Key{VKey: v}
	if window != nil {
		k.NotBefore, k.NotAfter = &window[0], &window[1]
	}
	reg, err := submitter.New([]submitter.Submitter{{Name: system, Keys: []submitter.Key{k}}, {Name: "other.system", Keys: []submitter.Key{{VKey: ov}}}})
	if err != nil {
		t.Fatal(err)
	}
	return keys{reg: reg, signer: s, other: o, rogue: r}
}

func sign(t *testing.T, text []byte, signers ...note.Signer) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: string(text) + "\n"}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpen(t *testing.T) {
	now := time.Date(2026, 11, 20, 11, 0, 0, 0, time.UTC)
	k := newKeys(t, nil)
	valid := line(t, validEvent())
	good := sign(t, valid, k.signer)
	if e, err := entry.Open(good, k.reg, now); err != nil || e.Submitter != system {
		t.Fatalf("valid entry: %v", err)
	}
	tampered := bytes.Replace(good, []byte(`"R"`), []byte(`"D"`), 1)
	otherSys := validEvent()
	otherSys["source"].(map[string]any)["system"] = "other.system"
	future := validEvent()
	future["time"] = now.Add(time.Hour).Format(time.RFC3339)

	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"no signature", append(bytes.Clone(valid), '\n'), entry.ErrUnsigned},
		{"no signature, blank line", append(bytes.Clone(valid), '\n', '\n'), entry.ErrUnsigned},
		{"wrong signature (tampered)", tampered, entry.ErrBadSignature},
		{"unknown key", sign(t, valid, k.rogue), submitter.ErrUnknownKey},
		{"signed by another submitter", sign(t, valid, k.other), entry.ErrSourceMismatch},
		{"claims another system", sign(t, line(t, otherSys), k.signer), entry.ErrSourceMismatch},
		{"two signatures", sign(t, valid, k.signer, k.other), entry.ErrManySignatures},
		{"extra unknown signature", sign(t, valid, k.signer, k.rogue), entry.ErrManySignatures},
		{"time in the future", sign(t, line(t, future), k.signer), entry.ErrTimeInTheFuture},
		{"garbage", []byte("hello"), entry.ErrUnsigned},
		{"oversize", append(sign(t, valid, k.signer), bytes.Repeat([]byte("x"), entry.MaxEntrySize)...), entry.ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := entry.Open(c.raw, k.reg, now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	t.Run("invalid UTF-8", func(t *testing.T) {
		raw := append(bytes.Clone(good), 0xff)
		var fe *entry.FieldError
		if _, err := entry.Open(raw, k.reg, now); !errors.As(err, &fe) {
			t.Fatalf("got %v, want a FieldError", err)
		}
	})
	t.Run("schema error inside a good signature", func(t *testing.T) {
		m := validEvent()
		m["note"] = "free text"
		var fe *entry.FieldError
		if _, err := entry.Open(sign(t, line(t, m), k.signer), k.reg, now); !errors.As(err, &fe) || fe.Field != "note" {
			t.Fatalf("got %v, want a FieldError naming note", err)
		}
	})
}

func TestKeyValidityWindow(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	k := newKeys(t, &[2]time.Time{from, to})
	ev := validEvent()
	ev["time"] = "2026-01-01T00:01:00Z"
	raw := sign(t, line(t, ev), k.signer)
	for _, c := range []struct {
		at   time.Time
		want error
	}{
		{from.Add(-time.Second), submitter.ErrKeyNotValid},
		{from, nil},
		{to.Add(-time.Second), nil},
		{to, submitter.ErrKeyNotValid}, // expired key
		{to.Add(24 * time.Hour), submitter.ErrKeyNotValid},
	} {
		if _, err := entry.Open(raw, k.reg, c.at); !errors.Is(err, c.want) {
			t.Errorf("at %s: got %v, want %v", c.at, err, c.want)
		}
	}
	// A monitor replaying judges the key at the event's own time.
	if _, err := entry.OpenForReplay(raw, k.reg); err != nil {
		t.Errorf("replay of an entry made inside the window: %v", err)
	}
}

func TestECDSASubmitter(t *testing.T) {
	skey, vkey, err := submitter.GenerateECDSA(system)
	if err != nil {
		t.Fatal(err)
	}
	s, err := submitter.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := submitter.New([]submitter.Submitter{{Name: system, Keys: []submitter.Key{{VKey: vkey}}}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := entry.ParseEvent(line(t, validEvent()))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := entry.Sign(ev, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := entry.Open(raw, reg, ev.When()); err != nil {
		t.Fatalf("ECDSA-signed entry: %v", err)
	}
	if _, err := entry.Open(bytes.Replace(raw, []byte(`"R"`), []byte(`"U"`), 1), reg, ev.When()); !errors.Is(err, entry.ErrBadSignature) {
		t.Fatalf("tampered ECDSA entry: got %v", err)
	}
}

func TestPseudonym(t *testing.T) {
	p := entry.Pseudonym([]byte("k"), []byte("salt"), "patient-1")
	if err := entry.CheckPseudonym(p); err != nil {
		t.Fatal(err)
	}
	if p == entry.Pseudonym([]byte("k"), []byte("other salt"), "patient-1") {
		t.Fatal("a new salt must give a new pseudonym (crypto-shredding)")
	}
}
