package witness_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/witness"
	fnote "github.com/transparency-dev/formats/note"
)

// TestStateSurvivesReopen closes a witness and builds a new one on the same
// state directory: it still refuses to roll back.
func TestStateSurvivesReopen(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 10)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	advance(t, tw, l, tree, 0, 4)
	advance(t, tw, l, tree, 4, 7)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	tw.build(t, witness.Config{Logs: []witness.LogConfig{l.config("")}})
	if a := tw.add(t, 0, nil, l.signTree(t, tree, 5)); a.code != 409 || string(a.body) != "7\n" {
		t.Fatalf("rollback after reopening: %d %q, want 409 \"7\\n\"", a.code, a.body)
	}
	advance(t, tw, l, tree, 7, 10)
}

// TestBinaryKillRestart builds carelog-witness, runs it, kills it with
// SIGKILL right after it cosigned, restarts it on the same state, and checks
// that it holds what it cosigned and refuses a rollback; then stops it with
// SIGTERM and expects a clean exit. It also exercises the keygen, vkey and
// evidence subcommands.
func TestBinaryKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool:", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "carelog-witness")
	build := exec.Command(goTool, "build", "-o", bin, "github.com/carelog/carelog/cmd/carelog-witness")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	keyFile := filepath.Join(dir, "witness.key")
	out, err := exec.Command(bin, "keygen", "-name", "w.example", "-out", keyFile).Output()
	if err != nil {
		t.Fatalf("keygen: %v", err)
	}
	vkey := strings.TrimSpace(string(out))
	out, err = exec.Command(bin, "vkey", "-key", keyFile).Output()
	if err != nil || strings.TrimSpace(string(out)) != vkey {
		t.Fatalf("vkey: %q, %v; keygen printed %q", out, err, vkey)
	}
	verifier, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}

	l := newTestLog(t, origin)
	tree := newTree("leaf", 20)
	cfgFile := filepath.Join(dir, "witness.json")
	cfg, _ := json.Marshal(witness.ConfigFile{Logs: []witness.LogConfig{l.config("")}})
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	addr := freeAddr(t)
	base := "http://" + addr

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "-listen", addr, "-key", keyFile, "-config", cfgFile, "-state", state, "-gossip-interval", "-1s")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("carelog-witness stderr:\n%s", stderr.String())
			}
		})
		poll(t, "the witness to serve", func() bool {
			resp, err := http.Get(base + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		return cmd
	}
	add := func(old uint64, proof [][]byte, size uint64) answer {
		return post(t, base+"/add-checkpoint", addBody(old, proof, l.signTree(t, tree, size)))
	}

	cmd := start()
	if a := add(0, nil, 6); a.code != 200 {
		t.Fatalf("add 6: %d %s", a.code, a.body)
	}
	a := add(6, consistencyProof(t, tree, 6, 11), 11)
	if a.code != 200 {
		t.Fatalf("add 11: %d %s", a.code, a.body)
	}
	lastSig := a.body
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	cmd = start()
	m := get(t, base+"/"+checkpoint.OriginID(origin)+"/checkpoint")
	s, err := checkpoint.Open(m.body, origin, l.verifier, verifier)
	if err != nil || s.Size != 11 || !bytes.Contains(m.body, lastSig) {
		t.Fatalf("after kill -9 the witness serves %q (%v), want the size-11 checkpoint it cosigned", m.body, err)
	}
	for _, tc := range []struct {
		old, size uint64
		code      int
	}{
		{0, 6, 409},  // roll back to what it cosigned before
		{6, 9, 409},  // extend an older checkpoint
		{11, 9, 400}, // old above the checkpoint
	} {
		var proof [][]byte
		if tc.old > 0 && tc.old < tc.size {
			proof = consistencyProof(t, tree, tc.old, tc.size)
		}
		a := add(tc.old, proof, tc.size)
		if a.code != tc.code {
			t.Fatalf("old %d size %d after restart: %d %s, want %d", tc.old, tc.size, a.code, a.body, tc.code)
		}
		if a.code == 409 && string(a.body) != "11\n" {
			t.Fatalf("409 body %q, want \"11\\n\"", a.body)
		}
	}
	if a := add(11, consistencyProof(t, tree, 11, 15), 15); a.code != 200 {
		t.Fatalf("add 15 after restart: %d %s", a.code, a.body)
	}

	out, err = exec.Command(bin, "evidence", "list", "-state", state).Output()
	var list witness.EvidenceList
	if err != nil || json.Unmarshal(out, &list) != nil || list.Evidence == nil || len(list.Evidence) != 0 {
		t.Fatalf("evidence list: %q, %v", out, err)
	}
	if out, err := exec.Command(bin, "evidence", "clear", "-state", state).CombinedOutput(); err == nil {
		t.Fatalf("evidence clear without -origin succeeded: %s", out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
}

// freeAddr returns a local address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
