// Package demo runs a whole carelog network in one process, for a try-out
// on one machine with nothing installed but Go: the log (Trillian
// in-process, on its memory storage or on MariaDB/MySQL), three witnesses
// with a 2-of-3 policy that gossip with each other, a monitor, and a
// simulated EHR that submits realistic access events. Each component
// listens on its own loopback port, exactly as it would as its own process,
// and keeps its state under one directory.
//
// It can also stage the attacks carelog exists to catch (a split view, a
// rewrite behind the log's back) and report whether they were caught.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/monitor"
	"github.com/carelog/carelog/personality"
	"github.com/carelog/carelog/submitter"
	"github.com/carelog/carelog/witness"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Attacks the demo can stage.
const (
	AttackSplitView = "split-view"
	AttackRewrite   = "rewrite"
)

// Config says how to run the demo.
type Config struct {
	// Dir holds keys, configs, state and logs; it is created if missing.
	// Keys found there are reused, so a demo can be restarted on the same
	// MariaDB database.
	Dir string
	// MySQLDSN makes the log use MariaDB/MySQL; empty: Trillian's memory
	// storage (nothing kept).
	MySQLDSN string
	// Rate is the simulated EHR's events per second.
	Rate float64
	// Attack is "", AttackSplitView or AttackRewrite.
	Attack string
	// Out receives the walkthrough and progress.
	Out io.Writer
}

// ErrNotDetected means a staged attack went unnoticed: the worst outcome.
var ErrNotDetected = errors.New("the attack was NOT detected")

// Network is DIR/network.json: the machine-readable description of the
// running network.
type Network struct {
	Log       NetworkLog       `json:"log"`
	Witnesses []NetworkWitness `json:"witnesses"`
	Policy    string           `json:"policy"`
	Monitor   NetworkMonitor   `json:"monitor"`
	Submitter NetworkSubmitter `json:"submitter"`
}

type NetworkLog struct {
	URL    string `json:"url"`
	Origin string `json:"origin"`
	VKey   string `json:"vkey"`
}

type NetworkWitness struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	VKey string `json:"vkey"`
}

type NetworkMonitor struct {
	URL string `json:"url"`
}

type NetworkSubmitter struct {
	Name     string `json:"name"`
	VKey     string `json:"vkey"`
	SKeyFile string `json:"skey_file"`
}

const (
	origin        = "carelog.demo/log"
	submitterName = "ehr.demo-hospital"
)

// node is one running component.
type node struct {
	name string
	ln   net.Listener
}

func (n node) url() string { return "http://" + n.ln.Addr().String() }

// Run brings the network up and keeps it running until ctx ends; with an
// attack, it stages the attack and returns nil only if it was detected
// with evidence.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 5
	}
	switch cfg.Attack {
	case "", AttackSplitView:
	case AttackRewrite:
		if cfg.MySQLDSN == "" {
			return errors.New("the rewrite attack edits the log's database behind its back, so it needs MariaDB/MySQL: " +
				"give --mysql DSN (scripts/mariadb.sh starts a private MariaDB and prints a DSN)")
		}
	default:
		return fmt.Errorf("unknown attack %q: want %s or %s", cfg.Attack, AttackSplitView, AttackRewrite)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(cfg.Dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := slog.New(slog.NewJSONHandler(logFile, nil))

	ks, err := loadOrMakeKeys(cfg.Dir, cfg.Attack == AttackSplitView)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	errc := make(chan error, 16)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	listen := func(name string) (node, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		return node{name: name, ln: ln}, err
	}
	logNode, err := listen("log")
	if err != nil {
		return err
	}
	monNode, err := listen("monitor")
	if err != nil {
		return err
	}
	witNodes := make([]node, len(ks.witnesses))
	for i := range ks.witnesses {
		if witNodes[i], err = listen(ks.witnesses[i].name); err != nil {
			return err
		}
	}
	// In the split-view attack the last witness is the victim: it is shown
	// only the forked log, which listens here.
	var forkNode node
	honest := len(ks.witnesses)
	if cfg.Attack == AttackSplitView {
		honest--
		if forkNode, err = listen("forked log"); err != nil {
			return err
		}
	}

	// Witnesses, each a peer of all the others.
	for i, w := range ks.witnesses {
		logURL := logNode.url()
		if i >= honest {
			logURL = forkNode.url()
		}
		var peers []witness.PeerConfig
		for j, p := range ks.witnesses {
			if j != i {
				peers = append(peers, witness.PeerConfig{Name: p.name, Key: p.cosigVKey, URL: witNodes[j].url()})
			}
		}
		wt, err := witness.New(witness.Config{
			StateDir: filepath.Join(cfg.Dir, w.name), Key: w.skey,
			Logs:           []witness.LogConfig{{Origin: origin, Key: ks.logVKey, URL: logURL}},
			Peers:          peers,
			GossipInterval: 2 * time.Second,
			Logger:         logger.With("component", w.name),
		})
		if err != nil {
			return fmt.Errorf("witness %s: %w", w.name, err)
		}
		defer wt.Close()
		ln := witNodes[i].ln
		goRun(w.name, func() error { return wt.Serve(ctx, ln) })
	}

	policyText := policy(ks.witnesses[:honest], witNodes[:honest])
	if err := os.WriteFile(filepath.Join(cfg.Dir, "witnesses.policy"), []byte(policyText), 0o644); err != nil {
		return err
	}
	pol, err := checkpoint.ParsePolicy([]byte(policyText))
	if err != nil {
		return err
	}

	// The log.
	lg, err := personality.New(ctx, personality.Config{
		Signer: ks.logSigner, Verifier: ks.logVerifier, Submitters: ks.registry, Policy: pol,
		MySQLDSN: cfg.MySQLDSN, Memory: cfg.MySQLDSN == "",
		CheckpointInterval: time.Second, WitnessRetry: 2 * time.Second,
		Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	defer lg.Close()
	goRun("log", func() error { return lg.Serve(ctx, logNode.ln) })

	// The monitor follows the log and every witness.
	var mws []monitor.WitnessConfig
	for i, w := range ks.witnesses {
		mws = append(mws, monitor.WitnessConfig{Name: w.name, VKey: w.cosigVKey, URL: witNodes[i].url()})
	}
	monCfg := monitorConfig(cfg.Dir, "monitor", logNode.url(), ks, pol, mws, logger)
	mon, err := monitor.New(monCfg)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	defer mon.Close()
	goRun("monitor", func() error { return mon.Run(ctx) })
	goRun("monitor http", func() error { return serveHandler(ctx, monNode.ln, mon.Handler()) })

	// The simulated EHR, handing every promise to the monitor to audit.
	c, err := client.New(client.Config{URL: logNode.url(), LogKey: ks.logVKey, Policy: pol})
	if err != nil {
		return err
	}
	var stats ehrsim.Stats
	gen := ehrsim.New(submitterName, uint64(time.Now().UnixNano()))
	gen.SnoopEvery = 20
	goRun("simulated EHR", func() error {
		return ehrsim.Run(ctx, ehrsim.RunConfig{Log: c, Signer: ks.submitter, Generator: gen, Rate: cfg.Rate, Concurrency: 4,
			OnAccepted: func(_ *entry.Event, res *client.SubmitResult) {
				if _, err := mon.AddPromise(ctx, []byte(res.Promise)); err != nil && ctx.Err() == nil {
					logger.Warn("demo: monitor refused a promise", "error", err)
				}
			}}, &stats)
	})

	net := Network{
		Log:       NetworkLog{URL: logNode.url(), Origin: origin, VKey: ks.logVKey},
		Policy:    policyText,
		Monitor:   NetworkMonitor{URL: monNode.url()},
		Submitter: NetworkSubmitter{Name: submitterName, VKey: ks.submitterVKey, SKeyFile: filepath.Join(cfg.Dir, "submitter.key")},
	}
	for i := 0; i < honest; i++ {
		net.Witnesses = append(net.Witnesses, NetworkWitness{Name: ks.witnesses[i].name, URL: witNodes[i].url(), VKey: ks.witnesses[i].cosigVKey})
	}

	// Up when the first cosigned checkpoint is served.
	if err := waitUp(ctx, c, errc); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(net, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg.Dir, "network.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	walkthrough(cfg.Out, cfg.Dir, net, cfg.MySQLDSN == "")

	switch cfg.Attack {
	case AttackSplitView:
		return stageSplitView(ctx, cfg, logger, ks, forkNode, witNodes, honest, mon, goRun)
	case AttackRewrite:
		return stageRewrite(ctx, cfg, logger, ks, lg, c, logNode, pol, mws)
	}
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(cfg.Out, "\nstopping: %s by the simulated EHR\n", &stats)
			return nil
		case err := <-errc:
			return err
		case <-t.C:
			progress(ctx, cfg.Out, c, mon, &stats)
		}
	}
}

func waitUp(ctx context.Context, c *client.Log, errc <-chan error) error {
	deadline := time.After(2 * time.Minute)
	for {
		if cp, err := c.Checkpoint(ctx); err == nil && cp.Size > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-deadline:
			return errors.New("the network did not come up within 2 minutes; see demo.log")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serveHandler serves h on ln until ctx ends.
func serveHandler(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// policy writes a 2-of-n tlog-policy for the witnesses.
func policy(ws []demoWitness, nodes []node) string {
	var b strings.Builder
	names := make([]string, len(ws))
	for i, w := range ws {
		fmt.Fprintf(&b, "witness %s %s %s\n", w.name, w.cosigVKey, nodes[i].url())
		names[i] = w.name
	}
	fmt.Fprintf(&b, "group demo-witnesses %d %s\nquorum demo-witnesses\n", min(2, len(ws)), strings.Join(names, " "))
	return b.String()
}

func monitorConfig(dir, name, logURL string, ks *keys, pol *checkpoint.Policy, ws []monitor.WitnessConfig, logger *slog.Logger) monitor.Config {
	return monitor.Config{
		Logs:         []monitor.LogConfig{{URL: logURL, Origin: origin, VKey: ks.logVKey, Policy: pol}},
		Witnesses:    ws,
		Submitters:   ks.registry,
		StateDir:     filepath.Join(dir, name),
		MergeDelay:   time.Minute,
		StaleAfter:   5 * time.Minute,
		PollInterval: 2 * time.Second,
		Rules: monitor.Rules{
			Emergency:   true,
			Snooping:    monitor.SnoopingRule{MaxPatients: 10, Window: 10 * time.Minute},
			KeyValidity: true,
		},
		Logger: logger.With("component", name),
	}
}

// keys are the demo network's keys, kept in the demo directory.
type keys struct {
	logSigner     note.Signer
	logVerifier   note.Verifier
	logVKey       string
	submitter     note.Signer
	submitterVKey string
	registry      *submitter.Registry
	witnesses     []demoWitness
}

type demoWitness struct {
	name, skey, cosigVKey string
}

// loadOrMakeKeys reuses the keys in dir or makes them.
func loadOrMakeKeys(dir string, victim bool) (*keys, error) {
	get := func(name string, gen func() (string, string, error)) (string, string, error) {
		skPath, vkPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".vkey")
		sk, err1 := os.ReadFile(skPath)
		vk, err2 := os.ReadFile(vkPath)
		if err1 == nil && err2 == nil {
			return strings.TrimSpace(string(sk)), strings.TrimSpace(string(vk)), nil
		}
		s, v, err := gen()
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(skPath, []byte(s+"\n"), 0o600); err != nil {
			return "", "", err
		}
		return s, v, os.WriteFile(vkPath, []byte(v+"\n"), 0o644)
	}
	ed := func(name string) func() (string, string, error) {
		return func() (string, string, error) { return submitter.GenerateEd25519(name) }
	}
	k := &keys{}
	lsk, lvk, err := get("log", ed(origin))
	if err != nil {
		return nil, err
	}
	if k.logSigner, k.logVerifier, err = fnote.NewEd25519SignerVerifier(lsk); err != nil {
		return nil, err
	}
	k.logVKey = lvk
	ssk, svk, err := get("submitter", ed(submitterName))
	if err != nil {
		return nil, err
	}
	if k.submitter, err = submitter.NewSigner(ssk); err != nil {
		return nil, err
	}
	k.submitterVKey = svk
	if k.registry, err = submitter.New([]submitter.Submitter{{Name: submitterName, Keys: []submitter.Key{{VKey: svk}}}}); err != nil {
		return nil, err
	}
	reg, _ := json.MarshalIndent(submitter.File{Submitters: []submitter.Submitter{{Name: submitterName, Keys: []submitter.Key{{VKey: svk}}}}}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "submitters.json"), append(reg, '\n'), 0o644); err != nil {
		return nil, err
	}
	n := 3
	if victim {
		n = 4
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("witness-%d.demo", i)
		sk, vk, err := get(fmt.Sprintf("witness-%d", i), ed(name))
		if err != nil {
			return nil, err
		}
		cv, err := fnote.VKeyToCosignatureV1(vk)
		if err != nil {
			return nil, err
		}
		k.witnesses = append(k.witnesses, demoWitness{name: name, skey: sk, cosigVKey: cv})
	}
	return k, nil
}
