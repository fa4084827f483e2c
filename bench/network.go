package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/submitter"
	"github.com/carelog/carelog/witness"
)

// Binaries of the components the harness runs as their own processes.
const (
	LogBinary     = "carelog-log"
	WitnessBinary = "carelog-witness"
)

// BuildBinaries builds carelog-log and carelog-witness into dir with the Go
// toolchain, from the carelog module the current directory is in.
func BuildBinaries(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"github.com/carelog/carelog/cmd/"+LogBinary, "github.com/carelog/carelog/cmd/"+WitnessBinary)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s %s: %w\n%s\n(run from the carelog source tree, or pass --bin with a directory holding both binaries)",
			LogBinary, WitnessBinary, err, out)
	}
	return nil
}

// child is a component running as its own process.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startChild(name, bin, logPath string, args ...string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

// stop asks the process to end (SIGTERM) and kills it if it has not within
// the grace period.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// exited says why the process ended, with the end of its log, if it has.
func (c *child) exited() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	tail := ""
	if b, err := os.ReadFile(c.logPath); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		tail = strings.Join(lines[max(0, len(lines)-8):], "\n")
	}
	return fmt.Errorf("%s exited (%v); its log %s ends:\n%s", c.name, c.err, c.logPath, tail)
}

// waitHealthy polls url until it answers 200.
func (c *child) waitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		if err := c.exited(); err != nil {
			return err
		}
		resp, err := hc.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("answered %d", resp.StatusCode)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not healthy at %s within %s: %w (log: %s)", c.name, url, timeout, err, c.logPath)
		}
		sleep(ctx, 100*time.Millisecond)
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// NetworkConfig says how to run the log and its witnesses.
type NetworkConfig struct {
	Bin       string // directory with carelog-log and carelog-witness
	Dir       string // keys, configs, witness state, process logs
	MySQLDSN  string // the log's database (created if missing)
	Submitter submitter.Submitter
	Witnesses int // the policy needs Quorum of them
	Quorum    int
	// LogArgs are extra carelog-log flags (e.g. --checkpoint-interval).
	LogArgs []string
}

// Network is a log and its witnesses, each its own process on loopback.
type Network struct {
	Origin    string
	LogURL    string
	LogVKey   string
	Policy    *checkpoint.Policy
	Log       *Component
	Witnesses []*Component

	children []*child
}

const benchOrigin = "carelog.bench/log"

// StartNetwork starts the witnesses and the log and waits until they are
// healthy.
func StartNetwork(ctx context.Context, cfg NetworkConfig) (_ *Network, err error) {
	n := &Network{Origin: benchOrigin}
	defer func() {
		if err != nil {
			n.Stop()
		}
	}()
	write := func(name string, b []byte) (string, error) {
		p := filepath.Join(cfg.Dir, name)
		return p, os.WriteFile(p, b, 0o600)
	}
	logSKey, logVKey, err := submitter.GenerateEd25519(benchOrigin)
	if err != nil {
		return nil, err
	}
	n.LogVKey = logVKey
	logKeyFile, err := write("log.key", []byte(logSKey+"\n"))
	if err != nil {
		return nil, err
	}
	reg, _ := json.MarshalIndent(submitter.File{Submitters: []submitter.Submitter{cfg.Submitter}}, "", "  ")
	regFile, err := write("submitters.json", reg)
	if err != nil {
		return nil, err
	}
	logAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	n.LogURL = "http://" + logAddr

	type wit struct{ name, skey, vkey, addr string }
	wits := make([]wit, cfg.Witnesses)
	for i := range wits {
		w := &wits[i]
		w.name = fmt.Sprintf("witness-%d.bench", i+1)
		if w.skey, w.vkey, err = witness.GenerateKey(w.name); err != nil {
			return nil, err
		}
		if w.addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	var pol strings.Builder
	names := make([]string, len(wits))
	for i, w := range wits {
		fmt.Fprintf(&pol, "witness %s %s http://%s\n", w.name, w.vkey, w.addr)
		names[i] = w.name
	}
	fmt.Fprintf(&pol, "group bench-witnesses %d %s\nquorum bench-witnesses\n", cfg.Quorum, strings.Join(names, " "))
	if n.Policy, err = checkpoint.ParsePolicy([]byte(pol.String())); err != nil {
		return nil, err
	}
	polFile, err := write("witnesses.policy", []byte(pol.String()))
	if err != nil {
		return nil, err
	}

	for i, w := range wits {
		var peers []witness.PeerConfig
		for j, p := range wits {
			if j != i {
				peers = append(peers, witness.PeerConfig{Name: p.name, Key: p.vkey, URL: "http://" + p.addr})
			}
		}
		conf, _ := json.MarshalIndent(witness.ConfigFile{
			Logs:  []witness.LogConfig{{Origin: benchOrigin, Key: logVKey, URL: n.LogURL}},
			Peers: peers,
		}, "", "  ")
		confFile, err := write(w.name+".json", conf)
		if err != nil {
			return nil, err
		}
		keyFile, err := write(w.name+".key", []byte(w.skey+"\n"))
		if err != nil {
			return nil, err
		}
		state := filepath.Join(cfg.Dir, w.name)
		if err := os.MkdirAll(state, 0o700); err != nil {
			return nil, err
		}
		c, err := startChild(w.name, filepath.Join(cfg.Bin, WitnessBinary), filepath.Join(cfg.Dir, w.name+".log"),
			"serve", "-key", keyFile, "-config", confFile, "-state", state, "-listen", w.addr, "-gossip-interval", "5s")
		if err != nil {
			return nil, err
		}
		n.children = append(n.children, c)
		n.Witnesses = append(n.Witnesses, &Component{Name: w.name, PID: c.cmd.Process.Pid})
	}

	args := append([]string{"--listen", logAddr, "--key", logKeyFile, "--submitters", regFile, "--policy", polFile,
		"--mysql", cfg.MySQLDSN, "--log-level", "warn"}, cfg.LogArgs...)
	lc, err := startChild("carelog-log", filepath.Join(cfg.Bin, LogBinary), filepath.Join(cfg.Dir, "log.log"), args...)
	if err != nil {
		return nil, err
	}
	n.children = append(n.children, lc)
	n.Log = &Component{Name: "log", PID: lc.cmd.Process.Pid}

	for i, w := range wits {
		if err := n.children[i].waitHealthy(ctx, "http://"+w.addr+witness.PathHealthz, 30*time.Second); err != nil {
			return nil, err
		}
	}
	if err := lc.waitHealthy(ctx, n.LogURL+"/healthz", 2*time.Minute); err != nil {
		return nil, err
	}
	return n, nil
}

// Exited reports a component that has stopped.
func (n *Network) Exited() error {
	var errs []error
	for _, c := range n.children {
		errs = append(errs, c.exited())
	}
	return errors.Join(errs...)
}

// Stop stops every process.
func (n *Network) Stop() {
	for i := len(n.children) - 1; i >= 0; i-- {
		n.children[i].stop(10 * time.Second)
	}
}
