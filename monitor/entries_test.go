package monitor

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/submitter"
)

// Entries that would never have passed the log's own checks, inserted
// behind its back: each is a bad-entry alert naming its index, and the
// good entries around it are not.
func TestForgedEntry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		forge func(e *env) []byte
	}{
		{"signature of another event", func(e *env) []byte {
			a, b := e.sign(e.event(1000)), e.sign(e.event(1001))
			text, _, _ := bytes.Cut(a, []byte("\n\n"))
			_, sig, _ := bytes.Cut(b, []byte("\n\n"))
			return append(append(text, "\n\n"...), sig...)
		}},
		{"unregistered key under the submitter's name", func(e *env) []byte {
			skey, _, _ := submitter.GenerateEd25519(testSubmitter)
			s, _ := submitter.NewSigner(skey)
			b, err := entry.Sign(e.event(1000), s)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"unregistered submitter", func(e *env) []byte {
			skey, _, _ := submitter.GenerateEd25519("rogue.example")
			s, _ := submitter.NewSigner(skey)
			ev := e.event(1000)
			ev.Source.System = "rogue.example"
			b, _ := entry.Sign(ev, s)
			return b
		}},
		{"free-text field, validly signed", func(e *env) []byte {
			line, _ := json.Marshal(e.event(1000))
			line = append(line[:len(line)-1], `,"note":"free text"}`...)
			b, err := entry.SignLine(line, e.signer)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"source.system is not the signer", func(e *env) []byte {
			ev := e.event(1000)
			ev.Source.System = "other.example"
			line, _ := json.Marshal(ev)
			b, _ := entry.SignLine(line, e.signer)
			return b
		}},
		{"not a signed note", func(e *env) []byte { return []byte("hello\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entries := e.routine(0, 12)
			entries[5] = tc.forge(e)
			e.appendAndPublish(entries...)
			res := runOnce(t, e.monitor(e.config()))
			if got, want := summarize(res.Alerts), []found{{Kind: KindBadEntry, Index: 5}}; !reflect.DeepEqual(got, want) {
				t.Fatalf("alerts %v, want %v (errors %v)", got, want, res.Errors)
			}
			if res.ExitCode() != ExitIntegrity || res.Logs[0].Replay.Position != 12 {
				t.Fatalf("exit %d, replay %+v", res.ExitCode(), res.Logs[0].Replay)
			}
		})
	}
}

// The watch rules fire on crafted break-glass, watched-patient, snooping and
// key-validity patterns, and stay silent on routine traffic.
func TestWatchRules(t *testing.T) {
	allOn := Rules{Emergency: true, WatchedPatients: []string{pseudonym(100)}, KeyValidity: true,
		Snooping: SnoopingRule{MaxPatients: 10, Window: time.Hour}}
	type access struct {
		minute  int
		actor   string
		patient int
	}
	for _, tc := range []struct {
		name   string
		rules  Rules
		window *[2]time.Time // the submitter key's validity window, if any
		build  func(e *env) [][]byte
		want   []found
	}{
		{
			name:  "routine traffic is silent",
			rules: allOn,
			build: func(e *env) [][]byte { return e.routine(0, 300) },
			want:  []found{},
		},
		{
			name:  "emergency access",
			rules: allOn,
			build: func(e *env) [][]byte {
				es := e.routine(0, 12)
				for i, mod := range map[int]func(*entry.Event){
					3: func(ev *entry.Event) { ev.Purpose = "ETREAT" },
					7: func(ev *entry.Event) { ev.Event = "break-glass" },
					9: func(ev *entry.Event) { ev.Purpose = "BTG" },
				} {
					ev := e.event(i)
					mod(ev)
					es[i] = e.sign(ev)
				}
				return es
			},
			want: []found{{KindEmergencyAccess, 3, ""}, {KindEmergencyAccess, 7, ""}, {KindEmergencyAccess, 9, ""}},
		},
		{
			name:  "emergency rule off",
			rules: Rules{},
			build: func(e *env) [][]byte {
				ev := e.event(0)
				ev.Purpose = "ETREAT"
				return [][]byte{e.sign(ev)}
			},
			want: []found{},
		},
		{
			name:  "watched patient",
			rules: Rules{WatchedPatients: []string{pseudonym(2)}},
			build: func(e *env) [][]byte { return e.routine(0, 20) }, // patient i%7
			want:  []found{{KindWatchedPatient, 2, ""}, {KindWatchedPatient, 9, ""}, {KindWatchedPatient, 16, ""}},
		},
		{
			name:  "snooping",
			rules: Rules{Snooping: SnoopingRule{MaxPatients: 5, Window: time.Hour}},
			build: func(e *env) [][]byte {
				var as []access
				for i := range 10 { // 10 distinct patients in 10 minutes: alert at the 6th only
					as = append(as, access{minute: i, actor: "snoop", patient: 200 + i})
				}
				for i := range 6 { // 6 distinct patients, 20 minutes apart: never 6 in an hour
					as = append(as, access{minute: 20 * i, actor: "slow", patient: 300 + i})
				}
				for i := range 30 { // one patient, many times
					as = append(as, access{minute: i, actor: "busy", patient: 400})
				}
				sort.SliceStable(as, func(i, j int) bool { return as[i].minute < as[j].minute })
				var es [][]byte
				for _, a := range as {
					ev := e.event(0)
					ev.Time = baseTime.Add(time.Duration(a.minute) * time.Minute).Format(time.RFC3339)
					ev.Actor.ID, ev.Patient = a.actor, pseudonym(a.patient)
					es = append(es, e.sign(ev))
				}
				return es
			},
			// want: one alert, at snoop's 6th access (found below).
		},
		{
			name:   "key outside its validity window",
			rules:  allOn,
			window: &[2]time.Time{baseTime, baseTime.Add(10 * time.Minute)},
			build:  func(e *env) [][]byte { return e.routine(5, 10) }, // minutes 5..14
			want:   []found{{KindKeyValidity, 5, ""}, {KindKeyValidity, 6, ""}, {KindKeyValidity, 7, ""}, {KindKeyValidity, 8, ""}, {KindKeyValidity, 9, ""}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entries := tc.build(e)
			want := tc.want
			if tc.name == "snooping" {
				want = []found{{KindSnooping, snoopIndex(t, entries, "snoop", 6), "hosp-1/snoop"}}
			}
			e.appendAndPublish(entries...)
			cfg := e.config()
			cfg.Rules = tc.rules
			if tc.window != nil {
				nb, na := tc.window[0], tc.window[1]
				reg, err := submitter.New([]submitter.Submitter{{Name: testSubmitter, Keys: []submitter.Key{{VKey: e.vkey, NotBefore: &nb, NotAfter: &na}}}})
				if err != nil {
					t.Fatal(err)
				}
				cfg.Submitters = reg
			}
			res := runOnce(t, e.monitor(cfg))
			if got := summarize(res.Alerts); !reflect.DeepEqual(got, want) {
				t.Fatalf("alerts %v, want %v (errors %v)", got, want, res.Errors)
			}
			wantCode := ExitClean
			if len(want) > 0 {
				wantCode = ExitWatch
			}
			if res.ExitCode() != wantCode {
				t.Fatalf("exit %d, want %d", res.ExitCode(), wantCode)
			}
			for _, a := range res.Alerts {
				if a.Index == nil || a.Class != ClassWatch {
					t.Fatalf("alert without index or with class %s: %+v", a.Class, a)
				}
			}
		})
	}
}

// snoopIndex finds the index of actor's n-th entry.
func snoopIndex(t *testing.T, entries [][]byte, actor string, n int) int64 {
	t.Helper()
	for i, b := range entries {
		var ev entry.Event
		if err := json.Unmarshal(entry.Text(b), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Actor.ID == actor {
			if n--; n == 0 {
				return int64(i)
			}
		}
	}
	t.Fatal("no such entry")
	return 0
}
