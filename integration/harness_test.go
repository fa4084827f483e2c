// Package integration runs carelog's real binaries as separate processes
// against a real MariaDB/MySQL, through a real Trillian, and checks what a
// user would see: HTTP answers, signatures, proofs, exit codes.
package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

// bin holds the binaries built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "carelog-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// keyset is the keys of a test network, written to files.
type keyset struct {
	dir            string
	origin         string
	logKeyFile     string
	logVKey        string
	submitterName  string
	submitter      note.Signer
	submittersFile string
}

func newKeyset(t *testing.T) *keyset {
	t.Helper()
	dir := t.TempDir()
	k := &keyset{dir: dir, origin: "carelog.integration/log", submitterName: "ehr.integration"}
	skey, vkey, err := note.GenerateKey(nil, k.origin)
	if err != nil {
		t.Fatal(err)
	}
	k.logVKey = vkey
	k.logKeyFile = filepath.Join(dir, "log.key")
	writeFile(t, k.logKeyFile, skey)
	sskey, svkey, err := submitter.GenerateEd25519(k.submitterName)
	if err != nil {
		t.Fatal(err)
	}
	if k.submitter, err = submitter.NewSigner(sskey); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "submitter.key"), sskey)
	reg := submitter.File{Submitters: []submitter.Submitter{{Name: k.submitterName, Keys: []submitter.Key{{VKey: svkey}}}}}
	b, _ := json.Marshal(reg)
	k.submittersFile = filepath.Join(dir, "submitters.json")
	writeFile(t, k.submittersFile, string(b))
	return k
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// process is a running carelog binary.
type process struct {
	t      *testing.T
	name   string
	args   []string
	cmd    *exec.Cmd
	addr   string // HTTP address it reported
	marker string
	mu     sync.Mutex
	output strings.Builder
	exited chan struct{}
}

// start runs a binary and waits until it logs that it serves HTTP.
func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	return startUntil(t, "serving", name, args...)
}

// startUntil runs a binary and waits until it logs a JSON record whose
// message contains marker (with an "addr" if marker is "serving").
func startUntil(t *testing.T, marker, name string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, args: args, marker: marker}
	p.run()
	t.Cleanup(p.kill)
	return p
}

func (p *process) run() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(filepath.Join(bin, p.name), p.args...)
	// If the test binary dies (a timeout panic), its children die with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.output.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			// Every carelog binary logs a record whose message mentions
			// "serving", with the address it listens on.
			if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec.Msg, p.marker) && (rec.Addr != "" || p.marker != "serving") {
				select {
				case addrc <- rec.Addr:
				default:
				}
			}
		}
	}()
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("%s exited before serving:\n%s", p.name, p.log())
	case <-time.After(90 * time.Second):
		t.Fatalf("%s did not start serving in time:\n%s", p.name, p.log())
	}
}

func (p *process) url() string { return "http://" + p.addr }

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// kill9 kills the process without warning, as a crash would.
func (p *process) kill9() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// stop asks the process to shut down gracefully and waits.
func (p *process) stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.kill9()
		}
	}
}

func (p *process) kill() {
	select {
	case <-p.exited:
	default:
		p.kill9()
	}
	if p.t.Failed() {
		p.t.Logf("%s output:\n%s", p.name, tail(p.log(), 60))
	}
}

// restart starts the same command again on the same address.
func (p *process) restart() {
	p.t.Helper()
	p.args = setFlag(p.args, "--listen", p.addr)
	p.run()
}

func setFlag(args []string, flag, value string) []string {
	out := []string{}
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return append(out, flag, value)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logClient is an SDK client for a log process.
func logClient(t *testing.T, url, vkey string) *client.Log {
	t.Helper()
	c, err := client.New(client.Config{URL: url, LogKey: vkey, Policy: checkpoint.NoWitnesses()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
