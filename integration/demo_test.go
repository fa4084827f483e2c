package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs the README's first command: the whole network comes up,
// network.json appears with every part of the contract, and SIGINT stops
// everything cleanly.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "carelog"), "demo", "--dir", dir, "--rate", "20")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var nw struct {
		Log struct {
			URL, Origin, VKey string
		} `json:"log"`
		Witnesses []struct{ Name, URL, VKey string } `json:"witnesses"`
		Policy    string                             `json:"policy"`
		Monitor   struct{ URL string }               `json:"monitor"`
		Submitter struct {
			Name     string `json:"name"`
			VKey     string `json:"vkey"`
			SKeyFile string `json:"skey_file"`
		} `json:"submitter"`
	}
	waitFor(t, "network.json", 2*time.Minute, func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, "network.json"))
		return err == nil && json.Unmarshal(b, &nw) == nil, err
	})
	if nw.Log.URL == "" || nw.Log.VKey == "" || len(nw.Witnesses) != 3 || nw.Monitor.URL == "" || nw.Submitter.SKeyFile == "" ||
		!strings.Contains(nw.Policy, "quorum") {
		t.Fatalf("network.json is incomplete: %+v", nw)
	}
	// The published checkpoint verifies with the log key and the policy.
	policy := filepath.Join(dir, "witnesses.policy")
	c := policyClient(t, nw.Log.URL, nw.Log.VKey, policy)
	waitFor(t, "a cosigned checkpoint", time.Minute, func() (bool, error) {
		cp, err := c.Checkpoint(t.Context())
		return err == nil && cp.Size > 0, err
	})
	// The CLI walkthrough works against it.
	ev, err := exec.Command(filepath.Join(bin, "carelog"), "example-event", "--system", nw.Submitter.Name).Output()
	if err != nil {
		t.Fatal(err)
	}
	evFile := filepath.Join(dir, "event.json")
	writeFile(t, evFile, string(ev))
	sub := exec.Command(filepath.Join(bin, "carelog"), "submit", "--log", nw.Log.URL, "--log-key", filepath.Join(dir, "log.vkey"),
		"--policy", policy, "--key", nw.Submitter.SKeyFile, "--wait", "60s", "--bundle", filepath.Join(dir, "e.proof"), evFile)
	if b, err := sub.CombinedOutput(); err != nil {
		t.Fatalf("carelog submit: %v\n%s", err, b)
	}
	ver := exec.Command(filepath.Join(bin, "carelog"), "verify", "bundle", "--log-key", filepath.Join(dir, "log.vkey"), "--policy", policy, filepath.Join(dir, "e.proof"))
	if b, err := ver.CombinedOutput(); err != nil || !strings.Contains(string(b), "OK") {
		t.Fatalf("carelog verify bundle: %v\n%s", err, b)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo exited with %v after SIGINT:\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("demo did not stop within 30s of SIGINT:\n%s", out.String())
	}
}

// TestDemoSplitViewAttack stages the split-view attack: the demo must exit
// 0, which it does only when witnesses and the monitor proved the split.
func TestDemoSplitViewAttack(t *testing.T) {
	cmd := exec.Command(filepath.Join(bin, "carelog"), "demo", "--dir", t.TempDir(), "--attack", "split-view", "--rate", "20")
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "DETECTED") {
		t.Fatalf("split-view attack: %v\n%s", err, tail(string(b), 40))
	}
}
