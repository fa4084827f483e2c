package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/internal/fakelog"
	"github.com/carelog/carelog/monitor"
	"github.com/carelog/carelog/submitter"
)

// The binary's exit codes, end to end from flags and a config file: clean,
// usage error, operational error (log down), integrity alert (a rewritten
// entry), and acknowledgement.
func TestExitCodes(t *testing.T) {
	const name = "ehr.example"
	l, err := fakelog.New("log.example/carelog")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := submitter.GenerateEd25519(name)
	signer, _ := submitter.NewSigner(skey)
	for i := range 30 {
		ev := &entry.Event{V: 1, ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Time: time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC).Format(time.RFC3339), Action: "R", Event: "read",
			Actor: entry.Actor{ID: "dr-1", Role: "doctor", Org: "h"}, Patient: entry.Pseudonym([]byte("k"), []byte("s"), "p"),
			Purpose: "TREAT", Resource: entry.Resource{Type: "Observation", ID: "o"}, Source: entry.Source{System: name}}
		b, err := entry.Sign(ev, signer)
		if err != nil {
			t.Fatal(err)
		}
		l.Append(b)
	}
	l.Publish()
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()

	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("submitters.json", `{"submitters":[{"name":"`+name+`","keys":[{"vkey":"`+vkey+`"}]}]}`)
	config := func(state string) string {
		return write(state+".json", `{"state_dir": "`+state+`", "submitters_file": "submitters.json",
			"logs": [{"url": "`+srv.URL+`", "vkey": "`+l.VKey()+`"}]}`)
	}
	run := func(args ...string) (int, string) {
		var out, errs bytes.Buffer
		code := run(args, &out, &errs)
		return code, out.String()
	}

	if code, out := run("-config", config("clean"), "-once"); code != monitor.ExitClean || !strings.Contains(out, `"position": 30`) {
		t.Fatalf("clean log: exit %d\n%s", code, out)
	}
	if code, _ := run("-once"); code != monitor.ExitUsage {
		t.Fatalf("no config: exit %d", code)
	}
	if code, _ := run("-config", filepath.Join(dir, "missing.json"), "-once"); code != monitor.ExitUsage {
		t.Fatalf("missing config: exit %d", code)
	}

	l.SetUnavailable(true)
	if code, _ := run("-config", config("down"), "-once"); code != monitor.ExitOperational {
		t.Fatalf("log down: exit %d", code)
	}
	l.SetUnavailable(false)

	l.Rewrite(17, []byte("edited behind the log's back"))
	cfg := config("tampered")
	code, out := run("-config", cfg, "-once")
	if code != monitor.ExitIntegrity {
		t.Fatalf("rewritten entry: exit %d\n%s", code, out)
	}
	var res monitor.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Alerts) != 1 || *res.Alerts[0].Index != 17 {
		t.Fatalf("result: %v\n%s", err, out)
	}
	// Still integrity on the next run; after acknowledgement the halted
	// replay still keeps the run from being clean.
	if code, _ := run("-config", cfg, "-once"); code != monitor.ExitIntegrity {
		t.Fatalf("second run: exit %d", code)
	}
	if code, out := run("-config", cfg, "-ack", fmt.Sprint(res.Alerts[0].ID)); code != monitor.ExitClean || !strings.Contains(out, "acknowledged 1") {
		t.Fatalf("ack: exit %d %s", code, out)
	}
	if code, _ := run("-config", cfg, "-once"); code != monitor.ExitOperational {
		t.Fatalf("after ack: exit %d", code)
	}
}
