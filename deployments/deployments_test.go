// Package deployments_test checks the deployments (local script, compose,
// Kubernetes, systemd) against each other and against the binaries, without
// a Docker engine or a cluster: every file parses; every image, Dockerfile
// target, port, volume, Secret, ConfigMap and file they name exists and
// agrees; every flag they pass is a flag of that binary (the carelog
// binaries are built and asked with -h, and parse the very command lines;
// Trillian's flags are read from its source in the module cache); the
// generated configs load with the components' own loaders; and the local
// network, started from its generated configs, answers every health path the
// deployments probe and gets its checkpoint cosigned by two of three
// witnesses.
package deployments_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/monitor"
	"github.com/carelog/carelog/submitter"
	"github.com/carelog/carelog/witness"
)

// The carelog binaries the deployments run, and the paths the deployments
// probe on each (TestLocalNetworkStarts checks that each answers 200).
var probePaths = map[string][]string{
	"carelog-log":         {"/healthz", "/metrics"},
	"carelog-witness":     {"/healthz", "/metrics"},
	"carelog-monitor":     {"/status", "/metrics"},
	"trillian_log_server": {"/healthz", "/metrics"},
	"trillian_log_signer": {"/healthz", "/metrics"},
}

// The flag that sets each binary's listen address(es).
var listenFlags = map[string][]string{
	"carelog-log":         {"listen", "grpc-listen"},
	"carelog-witness":     {"listen"},
	"carelog-monitor":     {"listen"},
	"trillian_log_server": {"rpc_endpoint", "http_endpoint"},
	"trillian_log_signer": {"rpc_endpoint", "http_endpoint"},
}

var (
	repo   string // the repository root
	binDir string // the built binaries
)

func TestMain(m *testing.M) {
	var err error
	if repo, err = filepath.Abs(".."); err != nil {
		panic(err)
	}
	if binDir, err = os.MkdirTemp("", "carelog-deployments-bin"); err != nil {
		panic(err)
	}
	cmd := exec.Command("go", "build", "-o", binDir+"/",
		"./cmd/carelog-log", "./cmd/carelog-witness", "./cmd/carelog-monitor", "./cmd/carelog",
		"./deployments/compose/healthcheck")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binaries: %v\n%s", err, out)
		os.RemoveAll(binDir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// Flags

var (
	flagMu    sync.Mutex
	flagCache = map[string]map[string]bool{}
)

var usageFlag = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9_.-]*)`)

// flagsOf returns the flag names of a binary: the carelog ones from their
// -h output, Trillian's from its source.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	flagMu.Lock()
	defer flagMu.Unlock()
	if f, ok := flagCache[bin]; ok {
		return f
	}
	var f map[string]bool
	if strings.HasPrefix(bin, "carelog") {
		out, _ := exec.Command(filepath.Join(binDir, bin), "-h").CombinedOutput()
		f = map[string]bool{}
		for _, m := range usageFlag.FindAllStringSubmatch(string(out), -1) {
			f[m[1]] = true
		}
		if !f["listen"] && bin != "carelog" {
			t.Fatalf("%s -h lists no -listen flag; its usage output changed?\n%s", bin, out)
		}
	} else {
		f = trillianFlags(t, bin)
	}
	flagCache[bin] = f
	return f
}

var (
	trillianOnce sync.Once
	trillianDir  string
	trillianVer  string
)

func trillianModule(t *testing.T) (dir, version string) {
	t.Helper()
	trillianOnce.Do(func() {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "github.com/google/trillian")
		cmd.Dir = repo
		out, err := cmd.Output()
		if err != nil {
			return
		}
		trillianDir, trillianVer, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	})
	if trillianDir == "" {
		t.Fatal("go list -m github.com/google/trillian failed; is it still in go.mod?")
	}
	return trillianDir, trillianVer
}

// trillianFlags reads the flags a Trillian command defines: every flag.X
// call at any depth of its imports inside the Trillian module (providers
// register theirs), plus klog's, which its main installs.
func trillianFlags(t *testing.T, command string) map[string]bool {
	t.Helper()
	dir, _ := trillianModule(t)
	const mod = "github.com/google/trillian"
	flags := map[string]bool{"h": true, "help": true}
	seen := map[string]bool{}
	queue := []string{mod + "/cmd/" + command}
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if seen[pkg] {
			continue
		}
		seen[pkg] = true
		pdir := filepath.Join(dir, strings.TrimPrefix(pkg, mod))
		entries, err := os.ReadDir(pdir)
		if err != nil {
			t.Fatalf("Trillian package %s: %v", pkg, err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(pdir, e.Name()), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if p == mod || strings.HasPrefix(p, mod+"/") {
					queue = append(queue, p)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "flag" {
					return true
				}
				arg := 0
				if strings.HasSuffix(sel.Sel.Name, "Var") {
					arg = 1
				}
				if len(call.Args) > arg {
					if lit, ok := call.Args[arg].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						name, _ := strconv.Unquote(lit.Value)
						flags[name] = true
					}
				}
				return true
			})
		}
	}
	// klog.InitFlags(nil): v, logtostderr, alsologtostderr, ...
	for _, n := range []string{"v", "vmodule", "logtostderr", "alsologtostderr", "stderrthreshold", "log_dir", "log_file"} {
		flags[n] = true
	}
	if len(flags) < 15 || !flags["config"] {
		t.Fatalf("found only %d flags in Trillian's %s; did its layout change?", len(flags), command)
	}
	return flags
}

// flagArgs splits a command line into flag name -> value ("" for a bare
// flag, whose value may be the next argument).
func flagArgs(args []string) (map[string]string, []string) {
	m := map[string]string{}
	var order []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			val = args[i+1]
			i++
		}
		m[name] = val
		order = append(order, name)
	}
	return m, order
}

// checkFlags fails for every flag in args that bin does not have, and (for
// the carelog binaries) has the binary itself parse args.
func checkFlags(t *testing.T, where, bin string, args []string) map[string]string {
	t.Helper()
	known := flagsOf(t, bin)
	m, order := flagArgs(args)
	for _, name := range order {
		if !known[name] {
			t.Errorf("%s: %s has no flag -%s", where, bin, name)
		}
	}
	if strings.HasPrefix(bin, "carelog-") {
		// The binary parses the line up to -h: an unknown flag or a bad
		// value fails before the usage.
		out, _ := exec.Command(filepath.Join(binDir, bin), append(slices.Clone(args), "-h")...).CombinedOutput()
		for _, bad := range []string{"provided but not defined", "invalid value", "invalid boolean"} {
			if strings.Contains(string(out), bad) {
				t.Errorf("%s: %s does not parse %q: %s", where, bin, args, firstLine(out))
			}
		}
	}
	return m
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// fileFlags name files or directories, which must be where the deployment
// puts them.
var fileFlags = map[string]bool{"config": true, "key": true, "state": true}

// listenPorts returns the ports the flags make bin listen on.
func listenPorts(t *testing.T, where, bin string, flags map[string]string) []int {
	t.Helper()
	var ports []int
	for _, f := range listenFlags[bin] {
		v, ok := flags[f]
		if !ok {
			continue
		}
		_, p, err := net.SplitHostPort(v)
		if err != nil {
			t.Errorf("%s: -%s=%q is not host:port", where, f, v)
			continue
		}
		n, _ := strconv.Atoi(p)
		ports = append(ports, n)
	}
	return ports
}

// ---------------------------------------------------------------------------
// Generated configs

func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s%s", name, args, err, out, stderr.Bytes())
	}
	return string(out)
}

// generate runs deployments/gen-config.sh for profile into a new directory.
func generate(t *testing.T, profile string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, []string{"CARELOG_BIN=" + binDir}, "deployments/gen-config.sh", profile, dir)
	return dir
}

// checkGenerated loads what gen-config.sh wrote with the components' own
// loaders, and checks that the log's config file names only its flags.
func checkGenerated(t *testing.T, dir string) (logCfg map[string]any, origin string, logV note.Verifier, policy *checkpoint.Policy) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "log-secret/log.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // as carelog-log reads it: tree ids do not fit a float64
	if err := dec.Decode(&logCfg); err != nil {
		t.Fatalf("log.json: %v", err)
	}
	// Its keys are flag names and its values must parse as those flags.
	var args []string
	for k, v := range logCfg {
		args = append(args, fmt.Sprintf("--%s=%v", k, v))
	}
	checkFlags(t, "log.json", "carelog-log", args)
	if _, err := submitter.Load(filepath.Join(dir, "log/submitters.json")); err != nil {
		t.Error(err)
	}
	pb, err := os.ReadFile(filepath.Join(dir, "log/policy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if policy, err = checkpoint.ParsePolicy(pb); err != nil {
		t.Fatal(err)
	}
	if n := len(policy.Witnesses()); n != 3 {
		t.Errorf("policy.txt names %d witnesses, want 3", n)
	}
	vkey, err := os.ReadFile(filepath.Join(dir, "keys/log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	if logV, err = note.NewVerifier(strings.TrimSpace(string(vkey))); err != nil {
		t.Fatal(err)
	}
	origin = logV.Name()
	for _, w := range []string{"w1", "w2", "w3"} {
		var cfg witness.Config
		if err := witness.LoadConfigFile(filepath.Join(dir, w, "witness.json"), &cfg); err != nil {
			t.Error(err)
			continue
		}
		if len(cfg.Logs) != 1 || cfg.Logs[0].Origin != origin || cfg.Logs[0].Key != strings.TrimSpace(string(vkey)) {
			t.Errorf("%s/witness.json: logs %+v, want the log %s", w, cfg.Logs, origin)
		}
		if len(cfg.Peers) != 2 {
			t.Errorf("%s/witness.json: %d peers, want the 2 other witnesses", w, len(cfg.Peers))
		}
		for _, p := range cfg.Peers {
			if strings.HasPrefix(p.Name, w+".") {
				t.Errorf("%s/witness.json: the witness is its own peer", w)
			}
			if !slices.ContainsFunc(policy.Witnesses(), func(pw checkpoint.Witness) bool { return pw.Name == p.Name }) {
				t.Errorf("%s/witness.json: peer %s is not in the policy", w, p.Name)
			}
		}
		key, err := witness.ReadKeyFile(filepath.Join(dir, w+"-secret/witness.key"))
		if err != nil {
			t.Fatal(err)
		}
		cosig, err := witness.CosignatureVKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(pb), " "+cosig+" ") {
			t.Errorf("%s's key (%s) is not in policy.txt", w, cosig)
		}
	}
	mcfg, err := monitor.LoadConfig(filepath.Join(dir, "monitor/monitor.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(mcfg.Logs) != 1 || mcfg.Logs[0].Policy == nil || len(mcfg.Witnesses) != 3 {
		t.Errorf("monitor.json: %d logs (policy %v), %d witnesses; want 1 with a policy, 3", len(mcfg.Logs), len(mcfg.Logs) == 1 && mcfg.Logs[0].Policy != nil, len(mcfg.Witnesses))
	}
	for _, f := range []string{"keys/log.key", "log-secret/log.key", "w1-secret/witness.key", "keys/ehr.key"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		} else if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want a private file (0600)", f, st.Mode())
		}
	}
	return logCfg, origin, logV, policy
}

// urlsOf returns every URL the generated configs point at: the log's and
// the witnesses' (policy, witness peers, monitor).
func urlsOf(t *testing.T, dir string) []string {
	t.Helper()
	var urls []string
	pb, _ := os.ReadFile(filepath.Join(dir, "log/policy.txt"))
	for _, l := range strings.Split(string(pb), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "witness" {
			urls = append(urls, f[3])
		}
	}
	for _, w := range []string{"w1", "w2", "w3"} {
		var cfg witness.Config
		if err := witness.LoadConfigFile(filepath.Join(dir, w, "witness.json"), &cfg); err == nil {
			for _, l := range cfg.Logs {
				urls = append(urls, l.URL)
			}
			for _, p := range cfg.Peers {
				urls = append(urls, p.URL)
			}
		}
	}
	if mcfg, err := monitor.LoadConfig(filepath.Join(dir, "monitor/monitor.json")); err == nil {
		for _, l := range mcfg.Logs {
			urls = append(urls, l.URL)
		}
		for _, w := range mcfg.Witnesses {
			urls = append(urls, w.URL)
		}
	}
	if len(urls) != 3+3*3+4 {
		t.Errorf("found %d URLs in the generated configs, want %d", len(urls), 3+3*3+4)
	}
	return urls
}

// ---------------------------------------------------------------------------
// Shell scripts

func shellScripts(t *testing.T) []string {
	t.Helper()
	var scripts []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".state" || d.Name() == "generated" || d.Name() == "config") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".sh") {
			scripts = append(scripts, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) < 5 {
		t.Fatalf("found only %d shell scripts: %v", len(scripts), scripts)
	}
	return scripts
}

func TestShellScripts(t *testing.T) {
	scripts := shellScripts(t)
	shellcheck, _ := exec.LookPath("shellcheck")
	if shellcheck == "" {
		t.Log("shellcheck is not installed (apt-get install shellcheck); only bash -n")
	}
	for _, s := range scripts {
		st, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
		if shellcheck != "" {
			if out, err := exec.Command(shellcheck, s).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s:\n%s", s, out)
			}
		}
	}
}

// Without CARELOG_BIN, gen-config.sh builds the CLI it needs itself.
func TestGenConfigBuildsItsCLI(t *testing.T) {
	dir := t.TempDir()
	run(t, []string{"CARELOG_BIN="}, "deployments/gen-config.sh", "compose", dir)
	if _, err := os.Stat(filepath.Join(dir, "keys/log.key")); err != nil {
		t.Error(err)
	}
}

// ---------------------------------------------------------------------------
// Local deployment

type localEnv struct {
	dir   string
	env   []string
	ports map[string]int
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func newLocal(t *testing.T) *localEnv {
	p := freePorts(t, 6)
	l := &localEnv{dir: t.TempDir(), ports: map[string]int{
		"log": p[0], "grpc": p[1], "w1": p[2], "w2": p[3], "w3": p[4], "monitor": p[5],
	}}
	l.env = []string{
		"CARELOG_LOCAL_DIR=" + l.dir, "CARELOG_BIN=" + binDir,
		fmt.Sprintf("CARELOG_LOG_PORT=%d", p[0]), fmt.Sprintf("CARELOG_GRPC_PORT=%d", p[1]),
		fmt.Sprintf("CARELOG_WITNESS_PORTS=%d %d %d", p[2], p[3], p[4]),
		fmt.Sprintf("CARELOG_MONITOR_PORT=%d", p[5]),
		"CARELOG_MYSQL=nobody@tcp(127.0.0.1:1)/",
	}
	return l
}

// commands returns run.sh's command line of each component.
func (l *localEnv) commands(t *testing.T) map[string][]string {
	t.Helper()
	out := run(t, l.env, "deployments/local/run.sh", "commands")
	cmds := map[string][]string{}
	var cur string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if name, ok := strings.CutPrefix(line, "== "); ok {
			cur = name
			continue
		}
		cmds[cur] = append(cmds[cur], line)
	}
	want := []string{"log", "monitor", "w1", "w2", "w3"}
	got := mapsKeys(cmds)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("run.sh commands: components %v, want %v", got, want)
	}
	return cmds
}

func mapsKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestLocalConfigs(t *testing.T) {
	l := newLocal(t)
	run(t, l.env, "deployments/local/run.sh", "configs")
	dir := filepath.Join(l.dir, "config")
	logCfg, _, _, _ := checkGenerated(t, dir)
	if got := logCfg["mysql"]; got != "nobody@tcp(127.0.0.1:1)/carelog_local" {
		t.Errorf("log.json: mysql %q, want CARELOG_MYSQL plus the database", got)
	}
	// Every URL points at a port some component listens on.
	want := map[string]bool{}
	for _, c := range []string{"log", "w1", "w2", "w3"} {
		want[fmt.Sprintf("http://127.0.0.1:%d", l.ports[c])] = true
	}
	for _, u := range urlsOf(t, dir) {
		if !want[u] {
			t.Errorf("a config points at %s, where nothing listens", u)
		}
	}

	// The command lines: real flags, parsed by the binaries, listening where
	// the configs say, naming files that exist.
	for name, args := range l.commands(t) {
		bin := filepath.Base(args[0])
		flags := checkFlags(t, "run.sh "+name, bin, args[1:])
		ports := listenPorts(t, "run.sh "+name, bin, flags)
		if name != "monitor" && !slices.Contains(ports, l.ports[name]) {
			t.Errorf("run.sh %s listens on %v, want port %d", name, ports, l.ports[name])
		}
		for _, f := range []string{"config", "key"} {
			if v, ok := flags[f]; ok {
				if _, err := os.Stat(v); err != nil {
					t.Errorf("run.sh %s: -%s: %v", name, f, err)
				}
			}
		}
	}
	mcfg, err := monitor.LoadConfig(filepath.Join(dir, "monitor/monitor.json"))
	if err != nil {
		t.Fatal(err)
	}
	if mcfg.ListenAddr != fmt.Sprintf("127.0.0.1:%d", l.ports["monitor"]) {
		t.Errorf("monitor listens on %q, want port %d", mcfg.ListenAddr, l.ports["monitor"])
	}

	// A second run keeps the keys.
	before, _ := os.ReadFile(filepath.Join(dir, "keys/log.key"))
	run(t, l.env, "deployments/local/run.sh", "configs")
	after, _ := os.ReadFile(filepath.Join(dir, "keys/log.key"))
	if !bytes.Equal(before, after) {
		t.Error("a second run.sh configs replaced the log key")
	}
}

// TestLocalNetworkStarts starts the local network from run.sh's configs and
// command lines (the log on Trillian's memory storage instead of MariaDB, so
// that the test needs no database), and checks that every path the
// deployments probe answers 200 and that the log's checkpoint meets the
// 2-of-3 policy, which needs the keys, policy and witness configs to agree.
func TestLocalNetworkStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l := newLocal(t)
	run(t, l.env, "deployments/local/run.sh", "configs")
	cmds := l.commands(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	for _, name := range []string{"w1", "w2", "w3", "log", "monitor"} {
		args := cmds[name]
		if name == "log" {
			args = append(args, "--mysql=", "--memory")
		}
		for _, d := range []string{"data/" + name, "data/monitor"} {
			if err := os.MkdirAll(filepath.Join(l.dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		logf, err := os.Create(filepath.Join(l.dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	showLogs := func() {
		for _, name := range []string{"w1", "w2", "w3", "log", "monitor"} {
			b, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
			t.Logf("%s log:\n%s", name, lastLines(b, 15))
		}
	}
	client := &http.Client{Timeout: 3 * time.Second}
	get := func(u string) (int, []byte) {
		resp, err := client.Get(u)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	deadline := time.Now().Add(40 * time.Second)
	bins := map[string]string{"log": "carelog-log", "w1": "carelog-witness", "w2": "carelog-witness", "w3": "carelog-witness", "monitor": "carelog-monitor"}
	for _, name := range []string{"w1", "w2", "w3", "log", "monitor"} {
		for _, p := range probePaths[bins[name]] {
			u := fmt.Sprintf("http://127.0.0.1:%d%s", l.ports[name], p)
			for {
				code, body := get(u)
				if code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					showLogs()
					t.Fatalf("%s: %s answers %d %s, want 200", name, u, code, body)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}

	// The checkpoint, with the cosignatures the generated policy needs.
	dir := filepath.Join(l.dir, "config")
	_, origin, logV, policy := checkGenerated(t, dir)
	for {
		code, body := get(fmt.Sprintf("http://127.0.0.1:%d/checkpoint", l.ports["log"]))
		if code == http.StatusOK {
			if _, err := checkpoint.OpenWithPolicy(body, origin, logV, policy); err == nil {
				break
			} else if time.Now().After(deadline) {
				showLogs()
				t.Fatalf("the log's checkpoint does not meet the generated policy: %v\n%s", err, body)
			}
		} else if time.Now().After(deadline) {
			showLogs()
			t.Fatalf("GET /checkpoint: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// Dockerfiles

type stage struct {
	name, from string
	lines      []string // instructions, continuation lines joined
	entrypoint []string
	user       string
}

type dockerfile struct {
	path   string
	args   map[string]string // global ARGs before the first FROM
	stages map[string]*stage
}

func parseDockerfile(t *testing.T, p string) *dockerfile {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	df := &dockerfile{path: p, args: map[string]string{}, stages: map[string]*stage{}}
	var cur *stage
	var logical string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") && logical == "" {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			logical += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		logical += line
		ins := strings.Join(strings.Fields(logical), " ")
		logical = ""
		if ins == "" {
			continue
		}
		op, rest, _ := strings.Cut(ins, " ")
		switch strings.ToUpper(op) {
		case "FROM":
			f := strings.Fields(rest)
			cur = &stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				cur.name = f[2]
			}
			df.stages[cur.name] = cur
			continue
		case "ARG":
			if cur == nil {
				k, v, _ := strings.Cut(rest, "=")
				df.args[k] = v
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &cur.entrypoint); err != nil {
				t.Errorf("%s: ENTRYPOINT %s is not exec form: %v", p, rest, err)
			}
		case "USER":
			cur.user = rest
		}
		if cur != nil {
			cur.lines = append(cur.lines, ins)
		}
	}
	return df
}

// user returns the user a stage runs as, following FROM <stage>.
func (df *dockerfile) user(s *stage) string {
	for s != nil {
		if s.user != "" {
			return s.user
		}
		s = df.stages[s.from]
	}
	return "root"
}

// dockerfiles returns Dockerfile and Dockerfile.trillian, parsed.
func dockerfiles(t *testing.T) []*dockerfile {
	return []*dockerfile{
		parseDockerfile(t, "compose/Dockerfile"),
		parseDockerfile(t, "compose/Dockerfile.trillian"),
	}
}

// imageTarget maps an image of ours, carelog/<target>:tag, to its
// Dockerfile and stage.
func imageTarget(t *testing.T, dfs []*dockerfile, image string) (*dockerfile, *stage) {
	t.Helper()
	name, tag, _ := strings.Cut(image, ":")
	target, ok := strings.CutPrefix(name, "carelog/")
	if !ok {
		return nil, nil
	}
	if tag != "dev" {
		t.Errorf("image %s: our images are tagged dev (kustomization.yaml's images: renames them)", image)
	}
	var found *dockerfile
	var st *stage
	for _, df := range dfs {
		if s, ok := df.stages[target]; ok {
			if found != nil {
				t.Errorf("image %s: target %s is in two Dockerfiles", image, target)
			}
			found, st = df, s
		}
	}
	if found == nil {
		t.Errorf("image %s: no Dockerfile has a target %q", image, target)
	}
	return found, st
}

// binaryOf returns the binary an image of ours runs.
func binaryOf(st *stage) string {
	if st == nil || len(st.entrypoint) == 0 {
		return ""
	}
	return path.Base(st.entrypoint[0])
}

func TestDockerfiles(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	tdir, tver := trillianModule(t)
	for _, df := range dockerfiles(t) {
		if got := df.args["GO_VERSION"]; got != mf.Go.Version {
			t.Errorf("%s: GO_VERSION %s, but go.mod says go %s (the golang image builds with its own toolchain only)", df.path, got, mf.Go.Version)
		}
		if v, ok := df.args["TRILLIAN_VERSION"]; ok && v != tver {
			t.Errorf("%s: TRILLIAN_VERSION %s, but go.mod requires Trillian %s", df.path, v, tver)
		}
		if _, err := os.Stat(df.path + ".dockerignore"); err != nil {
			t.Errorf("%s: no %s.dockerignore: the context is the whole repository", df.path, filepath.Base(df.path))
		} else {
			ig, _ := os.ReadFile(df.path + ".dockerignore")
			for _, must := range []string{".git", "deployments/compose/config", "deployments/kubernetes/generated", "deployments/local/.state"} {
				if !strings.Contains(string(ig), must) {
					t.Errorf("%s.dockerignore does not exclude %s", df.path, must)
				}
			}
		}
		build := df.stages["build"]
		if build == nil {
			t.Fatalf("%s: no build stage", df.path)
		}
		if !slices.ContainsFunc(build.lines, func(l string) bool { return strings.Contains(l, "CGO_ENABLED=0") }) {
			t.Errorf("%s: the build stage does not set CGO_ENABLED=0", df.path)
		}
		for name, s := range df.stages {
			for _, l := range s.lines {
				f := strings.Fields(l)
				switch {
				case f[0] == "COPY" && !strings.HasPrefix(f[1], "--from"):
					srcs := f[1 : len(f)-1]
					for _, src := range srcs {
						if strings.HasPrefix(src, "--") || src == "." {
							continue
						}
						if _, err := os.Stat(filepath.Join(repo, src)); err != nil {
							t.Errorf("%s stage %s: COPY %s: %v", df.path, name, src, err)
						}
					}
				case f[0] == "RUN" && slices.Contains(f, "build"):
					for _, a := range f {
						if strings.HasPrefix(a, "./") {
							if _, err := os.Stat(filepath.Join(repo, a)); err != nil {
								t.Errorf("%s: go build %s: %v", df.path, a, err)
							}
						}
					}
				case f[0] == "RUN" && slices.Contains(f, "install"):
					for _, a := range f {
						if p, ok := strings.CutPrefix(a, "github.com/google/trillian/"); ok {
							p, _, _ = strings.Cut(p, "@")
							if _, err := os.Stat(filepath.Join(tdir, p)); err != nil {
								t.Errorf("%s: go install %s: %v", df.path, a, err)
							}
						}
					}
				}
			}
			if len(s.entrypoint) > 0 {
				if u := df.user(s); u == "root" || u == "0" || strings.HasPrefix(u, "0:") {
					t.Errorf("%s: target %s runs as root", df.path, name)
				}
				if name != "trillian-schema" && !strings.HasPrefix(df.stages[s.from].from, "gcr.io/distroless/static") {
					t.Errorf("%s: target %s is not on distroless/static", df.path, name)
				}
				if !slices.ContainsFunc(s.lines, func(l string) bool {
					return strings.HasPrefix(l, "COPY") && strings.HasSuffix(l, s.entrypoint[0])
				}) {
					t.Errorf("%s: target %s does not COPY its ENTRYPOINT %s", df.path, name, s.entrypoint[0])
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Compose

func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image   string
			Build   *struct{ Context, Dockerfile, Target string }
			Command []string
			Ports   []string
			Expose  []string
			Volumes []string
			Secrets []string
			Health  *struct{ Test []string } `yaml:"healthcheck"`
			Depends map[string]struct {
				Condition string
			} `yaml:"depends_on"`
		}
		Volumes map[string]any
		Secrets map[string]struct{ File string }
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if len(c.Services) < 9 {
		t.Fatalf("compose.yaml has %d services", len(c.Services))
	}
	gen := generate(t, "compose")
	logCfg, _, _, _ := checkGenerated(t, gen)
	config := func(src string) string { // ./config/x -> the generated x
		rel, _ := strings.CutPrefix(src, "./config")
		return filepath.Join(gen, rel)
	}
	dfs := dockerfiles(t)

	// secrets-init copies ./config/<n>-secret/* into the volume at /dst/<n>.
	secretVolumes := map[string]string{} // volume -> generated dir
	for _, v := range c.Services["secrets-init"].Volumes {
		src, dst, _ := strings.Cut(v, ":")
		if n, ok := strings.CutPrefix(dst, "/dst/"); ok {
			secretVolumes[src] = filepath.Join(gen, n+"-secret")
		}
	}
	if len(secretVolumes) != 5 {
		t.Errorf("secrets-init fills %d volumes, want 5 (log, trillian, w1-3)", len(secretVolumes))
	}

	// Each service's listen ports, for URLs that name it.
	listening := map[string][]int{}
	usedVolumes := map[string]bool{}
	for name, s := range c.Services {
		where := "compose " + name
		for dep := range s.Depends {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is not a service", where, dep)
			}
		}
		if !strings.HasPrefix(s.Image, "carelog/") {
			if !strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest") {
				t.Errorf("%s: image %q: pin a version", where, s.Image)
			}
		} else {
			df, st := imageTarget(t, dfs, s.Image)
			if s.Build == nil {
				t.Errorf("%s: image %s has no build", where, s.Image)
			} else {
				if filepath.Join("compose", s.Build.Context) != ".." || "deployments/"+filepath.Join("compose", filepath.Base(s.Build.Dockerfile)) != s.Build.Dockerfile {
					t.Errorf("%s: build context %s, dockerfile %s: want the repository root and deployments/compose/…", where, s.Build.Context, s.Build.Dockerfile)
				}
				if df != nil && (filepath.Base(df.path) != filepath.Base(s.Build.Dockerfile) || st.name != s.Build.Target) {
					t.Errorf("%s: image %s is built from %s target %s; want the target its name says", where, s.Image, s.Build.Dockerfile, s.Build.Target)
				}
			}
			bin := binaryOf(st)
			if _, ok := listenFlags[bin]; ok {
				flags := checkFlags(t, where, bin, s.Command)
				ports := listenPorts(t, where, bin, flags)
				if len(ports) == 0 {
					t.Errorf("%s: no listen address on the command line", where)
				}
				listening[name] = ports
				published := map[int]bool{}
				for _, p := range append(slices.Clone(s.Ports), s.Expose...) {
					_, cport, _ := strings.Cut(p, ":")
					if cport == "" {
						cport = p
					}
					n, _ := strconv.Atoi(cport)
					published[n] = true
					if !slices.Contains(ports, n) {
						t.Errorf("%s: port %s, but it listens on %v", where, p, ports)
					}
				}
				for _, p := range ports {
					if !published[p] {
						t.Errorf("%s listens on %d, which it neither publishes nor exposes", where, p)
					}
				}
				if s.Health == nil || len(s.Health.Test) != 3 || s.Health.Test[0] != "CMD" || s.Health.Test[1] != "/usr/local/bin/healthcheck" {
					t.Errorf("%s: want a healthcheck [CMD, /usr/local/bin/healthcheck, URL]", where)
				} else {
					u, err := url.Parse(s.Health.Test[2])
					if err != nil {
						t.Fatal(err)
					}
					port, _ := strconv.Atoi(u.Port())
					if !slices.Contains(ports, port) || !slices.Contains(probePaths[bin], u.Path) {
						t.Errorf("%s: healthcheck %s: want port in %v and a path in %v", where, u, ports, probePaths[bin])
					}
				}
				// Files named in flags are in the service's mounts.
				for f, v := range flags {
					if fileFlags[f] {
						checkComposeFile(t, where+" -"+f, v, s.Volumes, config, secretVolumes, f == "state")
					}
				}
				if bin == "carelog-log" {
					cfg, err := os.ReadFile(filepath.Join(gen, "log-secret/log.json"))
					if err != nil {
						t.Fatal(err)
					}
					var m map[string]any
					_ = json.Unmarshal(cfg, &m)
					for _, k := range []string{"key", "submitters", "policy"} {
						p, _ := m[k].(string)
						checkComposeFile(t, where+" log.json "+k, p, s.Volumes, config, secretVolumes, false)
					}
				}
				if bin == "carelog-monitor" {
					mcfg, err := monitor.LoadConfig(filepath.Join(gen, "monitor/monitor.json"))
					if err != nil {
						t.Fatal(err)
					}
					checkComposeFile(t, where+" monitor.json state_dir", mcfg.StateDir, s.Volumes, config, secretVolumes, true)
				}
			} else if st != nil && st.name == "trillian-schema" {
				if len(s.Command) != 1 || (s.Command[0] != "apply" && s.Command[0] != "wait") {
					t.Errorf("%s: command %q, want apply or wait", where, s.Command)
				}
				checkComposeFile(t, where+" DB_PASSWORD_FILE", "/run/carelog/db.password", s.Volumes, config, secretVolumes, false)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			switch {
			case strings.HasPrefix(src, "./config"):
				if _, err := os.Stat(config(src)); err != nil {
					t.Errorf("%s mounts %s, which gen-config.sh does not make", where, src)
				}
			case strings.HasPrefix(src, "."):
				if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
					t.Errorf("%s mounts %s: %v", where, src, err)
				}
			default:
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s mounts volume %s, which is not declared", where, src)
				}
				usedVolumes[src] = true
			}
		}
		for _, sec := range s.Secrets {
			d, ok := c.Secrets[sec]
			if !ok {
				t.Errorf("%s uses secret %s, which is not declared", where, sec)
			} else if _, err := os.Stat(config(d.File)); err != nil {
				t.Errorf("secret %s: %s is not made by gen-config.sh", sec, d.File)
			}
		}
	}
	for v := range c.Volumes {
		if !usedVolumes[v] {
			t.Errorf("volume %s is declared but not used", v)
		}
	}
	for _, s := range []string{"mariadb", "trillian-schema", "trillian-log-server", "trillian-log-signer", "log", "w1", "w2", "w3", "monitor"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("compose.yaml has no service %s", s)
		}
	}
	if !slices.Contains(c.Services["trillian-log-signer"].Command, "--force_master") {
		t.Error("the single compose signer runs without --force_master: with no etcd it would never be elected")
	}

	// The generated configs name services and ports that exist.
	resolve := func(where, hostport string) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			t.Errorf("%s: %q: %v", where, hostport, err)
			return
		}
		n, _ := strconv.Atoi(port)
		if host == "mariadb" && n == 3306 {
			return
		}
		if !slices.Contains(listening[host], n) {
			t.Errorf("%s: %s: no compose service %s listens on %d", where, hostport, host, n)
		}
	}
	for _, u := range urlsOf(t, gen) {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		resolve("config URL "+u, pu.Host)
	}
	resolve("log.json trillian-log", logCfg["trillian-log"].(string))
	resolve("log.json mysql", dsnHost(t, logCfg["mysql"].(string)))
	tcfg, _ := os.ReadFile(filepath.Join(gen, "trillian-secret/trillian.cfg"))
	checkTrillianCfg(t, string(tcfg), resolve)
}

func dsnHost(t *testing.T, dsn string) string {
	t.Helper()
	m := regexp.MustCompile(`@tcp\(([^)]*)\)/`).FindStringSubmatch(dsn)
	if m == nil {
		t.Errorf("DSN %q has no @tcp(host:port)/", dsn)
		return ""
	}
	return m[1]
}

// checkTrillianCfg checks the Trillian servers' flag file. Trillian splits
// it into words like a shell and parses them as its command line, which
// stops at the first word that is not a flag: so every word must be one.
func checkTrillianCfg(t *testing.T, cfg string, resolve func(where, hostport string)) {
	t.Helper()
	args := strings.Fields(cfg)
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			t.Errorf("trillian.cfg: %q is not a flag: Trillian would stop parsing the file there", a)
		}
	}
	for _, bin := range []string{"trillian_log_server", "trillian_log_signer"} {
		flags := checkFlags(t, "trillian.cfg", bin, args)
		resolve("trillian.cfg mysql_uri", dsnHost(t, flags["mysql_uri"]))
	}
}

// checkComposeFile checks that the absolute path p, as a service sees it,
// lies in one of its mounts and (for a file) exists in what gen-config.sh
// made for that mount.
func checkComposeFile(t *testing.T, where, p string, volumes []string, config func(string) string, secretVolumes map[string]string, dir bool) {
	t.Helper()
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		src, dst := parts[0], parts[1]
		rel, ok := strings.CutPrefix(p, dst+"/")
		if !ok && p != dst {
			continue
		}
		if dir {
			if p != dst || strings.HasPrefix(src, ".") || secretVolumes[src] != "" {
				t.Errorf("%s: %s should be a volume of its own", where, p)
			}
			return
		}
		var hostDir string
		switch {
		case strings.HasPrefix(src, "./config"):
			hostDir = config(src)
		case secretVolumes[src] != "":
			hostDir = secretVolumes[src]
		default:
			t.Errorf("%s: %s is in volume %s, which nothing fills", where, p, src)
			return
		}
		if _, err := os.Stat(filepath.Join(hostDir, rel)); err != nil {
			t.Errorf("%s: %s: %s has no %s", where, p, src, rel)
		}
		return
	}
	t.Errorf("%s: %s is in none of the service's mounts %v", where, p, volumes)
}

// ---------------------------------------------------------------------------
// Kubernetes

type object struct {
	Kind     string
	Metadata struct {
		Name      string
		Namespace string
		Labels    map[string]string
	}
	Spec yaml.Node
	Data map[string]string
	raw  map[string]any
	file string
}

func (o *object) id() string { return o.Kind + " " + o.Metadata.Namespace + "/" + o.Metadata.Name }

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container
	Volumes        []struct {
		Name   string
		Secret *struct {
			SecretName string `yaml:"secretName"`
		}
		ConfigMap *struct{ Name string } `yaml:"configMap"`
		EmptyDir  any                    `yaml:"emptyDir"`
	}
}

type probe struct {
	HTTPGet *struct {
		Path string
		Port yaml.Node
	} `yaml:"httpGet"`
	TCPSocket *struct{ Port yaml.Node } `yaml:"tcpSocket"`
	Exec      any
}

type container struct {
	Name    string
	Image   string
	Command []string
	Args    []string
	Env     []struct {
		Name      string
		Value     string
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	}
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	Readiness *probe `yaml:"readinessProbe"`
	Liveness  *probe `yaml:"livenessProbe"`
	Startup   *probe `yaml:"startupProbe"`
	Resources struct {
		Requests map[string]string
		Limits   map[string]string
	}
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct{ Drop []string }
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type workload struct {
	obj         *object
	labels      map[string]string
	pod         podSpec
	serviceName string
}

func readObjects(t *testing.T, file string, b []byte) []*object {
	t.Helper()
	var objs []*object
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(n.Content) == 0 {
			continue
		}
		o := &object{file: file}
		if err := n.Decode(o); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := n.Decode(&o.raw); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: an object without kind or name", file)
		}
		objs = append(objs, o)
	}
	return objs
}

type kustomization struct {
	Resources []string
	Images    []struct {
		Name    string
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	}
	SecretGenerator    []generator `yaml:"secretGenerator"`
	ConfigMapGenerator []generator `yaml:"configMapGenerator"`
}

type generator struct {
	Name, Namespace string
	Files           []string
}

func TestKubernetes(t *testing.T) {
	kb, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(kb, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	// Render it: a copy of the directory with freshly generated configs
	// (tree-id pinned, as after bootstrap).
	work := t.TempDir()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	bootstrap, _ := filepath.Glob("kubernetes/bootstrap/*.yaml")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if err := os.WriteFile(filepath.Join(work, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gen := filepath.Join(work, "generated")
	run(t, []string{"CARELOG_BIN=" + binDir}, "deployments/gen-config.sh", "kubernetes", gen)
	checkGenerated(t, gen)

	// The require-tree-id init container recognises an unpinned tree.
	const treeID = "3080302973317709259"
	logJSON, _ := os.ReadFile(filepath.Join(gen, "log-secret/log.json"))
	run(t, []string{"CARELOG_BIN=" + binDir, "CARELOG_TREE_ID=" + treeID}, "deployments/gen-config.sh", "kubernetes", gen)
	pinned, _ := os.ReadFile(filepath.Join(gen, "log-secret/log.json"))

	var objs []*object
	listed := map[string]bool{}
	for _, r := range k.Resources {
		listed[r] = true
		b, err := os.ReadFile(filepath.Join("kubernetes", r))
		if err != nil {
			t.Fatalf("kustomization.yaml resource %s: %v", r, err)
		}
		objs = append(objs, readObjects(t, r, b)...)
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !listed[b] {
			t.Errorf("kubernetes/%s is not in kustomization.yaml", b)
		}
	}
	nBootstrap := 0
	for _, f := range bootstrap {
		b, _ := os.ReadFile(f)
		bo := readObjects(t, f, b)
		nBootstrap += len(bo)
		objs = append(objs, bo...)
	}
	// The generators, as kustomize makes them (without the hash suffix).
	for i, g := range append(slices.Clone(k.SecretGenerator), k.ConfigMapGenerator...) {
		o := &object{Data: map[string]string{}}
		o.Kind = "ConfigMap"
		if i < len(k.SecretGenerator) {
			o.Kind = "Secret"
		}
		o.Metadata.Name, o.Metadata.Namespace = g.Name, g.Namespace
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = filepath.Base(f), f
			}
			b, err := os.ReadFile(filepath.Join(work, file))
			if err != nil {
				t.Errorf("%s generator %s/%s: %v (gen-config.sh does not make it)", o.Kind, g.Namespace, g.Name, err)
			}
			o.Data[key] = string(b)
		}
		objs = append(objs, o)
	}
	if _, err := os.Stat(filepath.Join(gen, "log-secret/log.json")); err == nil {
		var generated []string
		for _, g := range append(slices.Clone(k.SecretGenerator), k.ConfigMapGenerator...) {
			generated = append(generated, regexp.QuoteMeta(g.Name))
		}
		k8sKubectl(t, work, len(objs)-nBootstrap, generated)
	}

	byID := map[string]*object{}
	for _, o := range objs {
		if byID[o.id()] != nil {
			t.Errorf("%s is defined twice", o.id())
		}
		byID[o.id()] = o
	}
	dfs := dockerfiles(t)
	kImages := map[string]bool{}
	for _, i := range k.Images {
		kImages[i.Name] = true
	}

	var workloads []*workload
	for _, o := range objs {
		if o.Metadata.Namespace == "" && o.Kind != "Namespace" {
			t.Errorf("%s (%s) has no namespace", o.id(), o.file)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != "" && byID["Namespace /"+o.Metadata.Namespace] == nil {
			t.Errorf("%s: namespace %s is not defined", o.id(), o.Metadata.Namespace)
		}
		var tmpl struct {
			ServiceName string `yaml:"serviceName"`
			Selector    struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			Template struct {
				Metadata struct{ Labels map[string]string }
				Spec     podSpec
			}
		}
		switch o.Kind {
		case "Deployment", "StatefulSet", "Job":
			if err := o.Spec.Decode(&tmpl); err != nil {
				t.Fatalf("%s: %v", o.id(), err)
			}
			for k, v := range tmpl.Selector.MatchLabels {
				if tmpl.Template.Metadata.Labels[k] != v {
					t.Errorf("%s: selector %s=%s does not match its pods", o.id(), k, v)
				}
			}
			workloads = append(workloads, &workload{obj: o, labels: tmpl.Template.Metadata.Labels, pod: tmpl.Template.Spec, serviceName: tmpl.ServiceName})
		}
	}
	if len(workloads) < 9 {
		t.Fatalf("found %d workloads", len(workloads))
	}

	services := map[string][]*object{} // namespace -> services
	for _, o := range objs {
		if o.Kind == "Service" {
			services[o.Metadata.Namespace] = append(services[o.Metadata.Namespace], o)
		}
	}
	selects := func(sel map[string]string, labels map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	}

	// Each workload: images, flags, ports, probes, mounts, resources.
	replicas := map[string]int{}
	for _, w := range workloads {
		o := w.obj
		var spec struct{ Replicas *int }
		_ = o.Spec.Decode(&spec)
		if spec.Replicas != nil {
			replicas[o.Metadata.Name] = *spec.Replicas
		}
		if w.serviceName != "" && !slices.ContainsFunc(services[o.Metadata.Namespace], func(s *object) bool { return s.Metadata.Name == w.serviceName }) {
			t.Errorf("%s: serviceName %s is not a Service", o.id(), w.serviceName)
		}
		if w.pod.SecurityContext.RunAsNonRoot == nil || !*w.pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: pods do not set runAsNonRoot", o.id())
		}
		vols := map[string]string{} // volume name -> "secret:x" / "configMap:x" / ""
		for _, v := range w.pod.Volumes {
			switch {
			case v.Secret != nil:
				vols[v.Name] = "Secret:" + v.Secret.SecretName
			case v.ConfigMap != nil:
				vols[v.Name] = "ConfigMap:" + v.ConfigMap.Name
			default:
				vols[v.Name] = ""
			}
			if ref := vols[v.Name]; ref != "" {
				kind, name, _ := strings.Cut(ref, ":")
				if byID[kind+" "+o.Metadata.Namespace+"/"+name] == nil {
					t.Errorf("%s: volume %s: %s %s is not in namespace %s", o.id(), v.Name, kind, name, o.Metadata.Namespace)
				}
			}
		}
		var volumeClaims struct {
			VolumeClaimTemplates []struct{ Metadata struct{ Name string } } `yaml:"volumeClaimTemplates"`
		}
		_ = o.Spec.Decode(&volumeClaims)
		for _, vc := range volumeClaims.VolumeClaimTemplates {
			vols[vc.Metadata.Name] = "PVC"
		}
		for _, c := range append(slices.Clone(w.pod.InitContainers), w.pod.Containers...) {
			where := o.id() + " container " + c.Name
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["cpu"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("%s: want cpu and memory requests and limits", where)
			}
			if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation || !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
				t.Errorf("%s: want allowPrivilegeEscalation: false and capabilities dropped", where)
			}
			mounts := map[string]string{} // mount path -> volume
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok {
					t.Errorf("%s mounts %s, which is not a volume of the pod", where, m.Name)
				}
				mounts[m.MountPath] = m.Name
			}
			// fileIn checks that path p lies in a mount, and if that mount is
			// a Secret or ConfigMap, that it has the key.
			fileIn := func(what, p string, wantVolume bool) {
				for mp, vname := range mounts {
					rel, ok := strings.CutPrefix(p, mp+"/")
					if !ok && p != mp {
						continue
					}
					ref := vols[vname]
					if wantVolume {
						if p != mp || ref != "PVC" {
							t.Errorf("%s: %s %s should be a persistent volume of its own", where, what, p)
						}
						return
					}
					if ref == "" || ref == "PVC" {
						t.Errorf("%s: %s %s is in volume %s, which holds no such file", where, what, p, vname)
						return
					}
					kind, name, _ := strings.Cut(ref, ":")
					if src := byID[kind+" "+o.Metadata.Namespace+"/"+name]; src != nil {
						if _, ok := src.Data[rel]; !ok {
							t.Errorf("%s: %s %s: %s %s has no key %s", where, what, p, kind, name, rel)
						}
					}
					return
				}
				t.Errorf("%s: %s %s is in none of its mounts", where, what, p)
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					if s := byID["Secret "+o.Metadata.Namespace+"/"+ref.Name]; s == nil {
						t.Errorf("%s: env %s: no Secret %s", where, e.Name, ref.Name)
					} else if _, ok := s.Data[ref.Key]; !ok {
						t.Errorf("%s: env %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
					}
				}
				if strings.HasSuffix(e.Name, "_FILE") {
					fileIn("env "+e.Name, e.Value, false)
				}
			}
			ports := map[string]int{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			portOf := func(n yaml.Node) int {
				if v, err := strconv.Atoi(n.Value); err == nil {
					return v
				}
				p, ok := ports[n.Value]
				if !ok {
					t.Errorf("%s: probe port %q is not a named port", where, n.Value)
				}
				return p
			}
			if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q: pin a version", where, c.Image)
			}
			_, st := imageTarget(t, dfs, c.Image)
			name, _, _ := strings.Cut(c.Image, ":")
			if st != nil && !kImages[name] && !strings.HasPrefix(o.file, "kubernetes/bootstrap") {
				t.Errorf("%s: image %s is not in kustomization.yaml's images", where, name)
			}
			bin := binaryOf(st)
			isInit := slices.ContainsFunc(w.pod.InitContainers, func(ic container) bool { return ic.Name == c.Name })
			if bin == "createtree" {
				checkFlags(t, where, bin, c.Args)
			}
			if _, ok := listenFlags[bin]; ok && !isInit {
				flags := checkFlags(t, where, bin, c.Args)
				listen := listenPorts(t, where, bin, flags)
				for _, p := range listen {
					if !slices.Contains(mapsValues(ports), p) {
						t.Errorf("%s listens on %d, which is not a containerPort %v", where, p, ports)
					}
				}
				for _, p := range ports {
					if !slices.Contains(listen, p) {
						t.Errorf("%s: containerPort %d, but it listens on %v", where, p, listen)
					}
				}
				if c.Readiness == nil || c.Liveness == nil {
					t.Errorf("%s: want readiness and liveness probes", where)
				}
				for _, pr := range []*probe{c.Readiness, c.Liveness, c.Startup} {
					switch {
					case pr == nil:
					case pr.HTTPGet != nil:
						if port := portOf(pr.HTTPGet.Port); !slices.Contains(listen, port) || !slices.Contains(probePaths[bin], pr.HTTPGet.Path) {
							t.Errorf("%s: probe GET %s on %d: want a path in %v on a port in %v", where, pr.HTTPGet.Path, port, probePaths[bin], listen)
						}
					case pr.TCPSocket != nil:
						if port := portOf(pr.TCPSocket.Port); !slices.Contains(listen, port) {
							t.Errorf("%s: TCP probe on %d, which it does not listen on", where, port)
						}
					}
				}
				for f, v := range flags {
					if fileFlags[f] {
						fileIn("-"+f, v, f == "state")
					}
				}
				if bin == "carelog-log" {
					var m map[string]any
					if err := json.Unmarshal(pinned, &m); err != nil {
						t.Fatal(err)
					}
					for _, k := range []string{"key", "submitters", "policy"} {
						fileIn("log.json "+k, m[k].(string), false)
					}
				}
				if bin == "carelog-monitor" {
					mcfg, err := monitor.LoadConfig(filepath.Join(gen, "monitor/monitor.json"))
					if err != nil {
						t.Fatal(err)
					}
					fileIn("monitor.json state_dir", mcfg.StateDir, true)
				}
			}
			if strings.HasPrefix(c.Image, "carelog/trillian-schema:") {
				fileIn("DB_PASSWORD_FILE", "/run/carelog/db.password", false)
			}
			if c.Name == "require-tree-id" {
				script := strings.Join(c.Command, " ")
				m := regexp.MustCompile(`grep -q '([^']*)'`).FindStringSubmatch(script)
				if m == nil {
					t.Errorf("%s: its grep changed; update this test", where)
				} else if !strings.Contains(string(logJSON), m[1]) || strings.Contains(string(pinned), m[1]) {
					t.Errorf("%s: %q does not tell an unpinned log.json from a pinned one", where, m[1])
				}
			}
		}
	}
	if replicas["carelog-log"] < 2 || replicas["trillian-log-server"] < 2 || replicas["trillian-log-signer"] < 2 {
		t.Errorf("replicas %v: want several log personalities, Trillian log servers and signers", replicas)
	}
	for _, w := range workloads {
		if w.obj.Metadata.Name == "trillian-log-signer" {
			args := w.pod.Containers[0].Args
			if slices.Contains(args, "--force_master") || !slices.Contains(args, "--election_system=etcd") {
				t.Errorf("%s: several signers need Trillian's etcd election, never --force_master: %q", w.obj.id(), args)
			}
		}
	}

	// Services select pods, and their target ports are the pods' ports.
	podsIn := func(ns string, sel map[string]string) []*workload {
		var ws []*workload
		for _, w := range workloads {
			if w.obj.Metadata.Namespace == ns && len(sel) > 0 && selects(sel, w.labels) {
				ws = append(ws, w)
			}
		}
		return ws
	}
	svcPorts := map[string][]int{} // "name.namespace" -> ports
	for ns, svcs := range services {
		for _, s := range svcs {
			var spec struct {
				Selector map[string]string
				Ports    []struct {
					Port       int
					TargetPort yaml.Node `yaml:"targetPort"`
				}
			}
			_ = s.Spec.Decode(&spec)
			ws := podsIn(ns, spec.Selector)
			if len(ws) == 0 {
				t.Errorf("%s selects no pods", s.id())
				continue
			}
			for _, p := range spec.Ports {
				svcPorts[s.Metadata.Name+"."+ns] = append(svcPorts[s.Metadata.Name+"."+ns], p.Port)
				found := false
				for _, c := range ws[0].pod.Containers {
					for _, cp := range c.Ports {
						if cp.Name == p.TargetPort.Value || strconv.Itoa(cp.ContainerPort) == p.TargetPort.Value {
							found = found || cp.ContainerPort == p.Port
						}
					}
				}
				if !found {
					t.Errorf("%s: port %d -> %s is not the same port of its pods", s.id(), p.Port, p.TargetPort.Value)
				}
			}
		}
	}
	// Network policies select pods and let in only ports they serve.
	for _, o := range objs {
		if o.Kind != "NetworkPolicy" {
			continue
		}
		var spec struct {
			PodSelector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"podSelector"`
			Ingress []struct {
				From []struct {
					PodSelector *struct {
						MatchLabels      map[string]string `yaml:"matchLabels"`
						MatchExpressions []struct {
							Key    string
							Values []string
						} `yaml:"matchExpressions"`
					} `yaml:"podSelector"`
				}
				Ports []struct{ Port int }
			}
		}
		_ = o.Spec.Decode(&spec)
		ns := o.Metadata.Namespace
		var selected []*workload
		for _, w := range workloads {
			if w.obj.Metadata.Namespace == ns && selects(spec.PodSelector.MatchLabels, w.labels) {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			t.Errorf("%s selects no pods", o.id())
		}
		for _, in := range spec.Ingress {
			for _, p := range in.Ports {
				ok := false
				for _, w := range selected {
					for _, c := range w.pod.Containers {
						ok = ok || slices.ContainsFunc(c.Ports, func(cp struct {
							Name          string
							ContainerPort int `yaml:"containerPort"`
						}) bool {
							return cp.ContainerPort == p.Port
						})
					}
				}
				if !ok {
					t.Errorf("%s lets in port %d, which none of its pods serves", o.id(), p.Port)
				}
			}
			for _, f := range in.From {
				if f.PodSelector == nil {
					continue
				}
				if len(f.PodSelector.MatchLabels) > 0 && len(podsIn(ns, f.PodSelector.MatchLabels)) == 0 {
					t.Errorf("%s: from %v matches no pods", o.id(), f.PodSelector.MatchLabels)
				}
				for _, e := range f.PodSelector.MatchExpressions {
					for _, v := range e.Values {
						if len(podsIn(ns, map[string]string{e.Key: v})) == 0 {
							t.Errorf("%s: from %s=%s matches no pods", o.id(), e.Key, v)
						}
					}
				}
			}
		}
	}

	// The generated configs name Services and ports that exist.
	resolve := func(where, hostport string) {
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			t.Errorf("%s: %q: %v", where, hostport, err)
			return
		}
		n, _ := strconv.Atoi(port)
		svc, ok := strings.CutSuffix(host, ".svc.cluster.local")
		if !ok || !slices.Contains(svcPorts[svc], n) {
			t.Errorf("%s: %s is not a Service port (name.namespace.svc.cluster.local)", where, hostport)
		}
	}
	for _, u := range urlsOf(t, gen) {
		pu, _ := url.Parse(u)
		resolve("config URL "+u, pu.Host)
	}
	var logCfg map[string]any
	dec := json.NewDecoder(bytes.NewReader(pinned))
	dec.UseNumber()
	_ = dec.Decode(&logCfg)
	resolve("log.json trillian-log", logCfg["trillian-log"].(string))
	resolve("log.json mysql", dsnHost(t, logCfg["mysql"].(string)))
	if fmt.Sprint(logCfg["tree-id"]) != treeID {
		t.Errorf("log.json: tree-id %v, want CARELOG_TREE_ID", logCfg["tree-id"])
	}
	tcfg, _ := os.ReadFile(filepath.Join(gen, "trillian-secret/trillian.cfg"))
	checkTrillianCfg(t, string(tcfg), resolve)
	for _, w := range workloads {
		for _, c := range w.pod.Containers {
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--etcd_servers="); ok {
					for _, hp := range strings.Split(v, ",") {
						host, port, _ := net.SplitHostPort(hp)
						pod, svc, _ := strings.Cut(host, ".")
						resolve("--etcd_servers "+hp+" ("+pod+")", svc+":"+port)
					}
				}
				if v, ok := strings.CutPrefix(a, "--admin_server="); ok {
					resolve("--admin_server", v)
				}
			}
		}
	}

	// The three witnesses are the same but for their namespace.
	wb, _ := os.ReadFile("kubernetes/witnesses.yaml")
	docs := strings.Split(string(wb), "\n---\n")
	byNS := map[string]string{}
	for _, d := range docs {
		ns := regexp.MustCompile(`namespace: (carelog-w\d)`).FindStringSubmatch(d)
		if ns == nil {
			continue
		}
		var body []string
		for _, l := range strings.Split(d, "\n") {
			if !strings.HasPrefix(l, "#") {
				body = append(body, l)
			}
		}
		byNS[ns[1]] += strings.ReplaceAll(strings.TrimSpace(strings.Join(body, "\n")), ns[1], "carelog-wN") + "\n"
	}
	if len(byNS) != 3 || byNS["carelog-w1"] != byNS["carelog-w2"] || byNS["carelog-w1"] != byNS["carelog-w3"] {
		t.Errorf("witnesses.yaml: the witnesses in %d namespaces differ beyond their namespace", len(byNS))
	}
}

func mapsValues(m map[string]int) []int {
	var vs []int
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

// k8sKubectl renders the kustomization with kubectl, if there is one, and
// checks that it makes every object.
func k8sKubectl(t *testing.T, dir string, want int, generated []string) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not found: kustomization.yaml checked by hand only")
		return
	}
	out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	objs := readObjects(t, "kubectl kustomize", out)
	if len(objs) != want {
		t.Errorf("kubectl kustomize made %d objects, want %d", len(objs), want)
	}
	// References to generated objects carry their hash suffix and resolve
	// within the namespace.
	names := map[string]bool{}
	for _, o := range objs {
		names[o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name] = true
	}
	re := regexp.MustCompile(`(secretName|name): ((?:` + strings.Join(generated, "|") + `)-[a-z0-9]{10})\n`)
	for _, o := range objs {
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" && o.Kind != "Job" {
			continue
		}
		b, _ := yaml.Marshal(o.raw)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !names["Secret "+o.Metadata.Namespace+"/"+m[2]] && !names["ConfigMap "+o.Metadata.Namespace+"/"+m[2]] {
				t.Errorf("kubectl kustomize: %s refers to %s, which is not in its namespace", o.id(), m[2])
			}
		}
	}
}

// ---------------------------------------------------------------------------
// systemd

type unit map[string]map[string][]string // section -> key -> values

func parseUnit(t *testing.T, p string) unit {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	var sec string
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			sec = l[1 : len(l)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: %q is not key=value in a section", p, i+1, l)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

// envFile reads KEY="value" lines.
func envFile(t *testing.T, p string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(k, "#") {
			m[k] = strings.Trim(v, `"`)
		}
	}
	return m
}

func TestSystemd(t *testing.T) {
	units, _ := filepath.Glob("systemd/*.service")
	sort.Strings(units)
	want := []string{"systemd/carelog-log.service", "systemd/carelog-monitor.service", "systemd/carelog-witness.service"}
	if !slices.Equal(units, want) {
		t.Fatalf("units %v, want %v", units, want)
	}
	sysusers, _ := os.ReadFile("systemd/carelog.sysusers")
	required := map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallArchitectures": "native",
		"ProtectKernelTunables": "yes", "ProtectControlGroups": "yes", "MemoryDenyWriteExecute": "yes",
		"RestrictNamespaces": "yes", "LockPersonality": "yes", "UMask": "0077",
	}
	for _, p := range units {
		u := parseUnit(t, p)
		s := u["Service"]
		bin := strings.TrimSuffix(filepath.Base(p), ".service")
		for k, v := range required {
			if got, ok := s[k]; !ok || got[len(got)-1] != v {
				t.Errorf("%s: want %s=%s, have %q", p, k, v, got)
			}
		}
		if !slices.Contains(s["SystemCallFilter"], "@system-service") {
			t.Errorf("%s: want SystemCallFilter=@system-service", p)
		}
		if len(s["EnvironmentFile"]) == 0 || u["Install"]["WantedBy"] == nil {
			t.Errorf("%s: want an EnvironmentFile and an [Install] WantedBy", p)
		}
		if s["DynamicUser"] == nil {
			user := s["User"]
			if len(user) != 1 || !strings.Contains(string(sysusers), "u "+user[0]+" ") {
				t.Errorf("%s: runs as neither a DynamicUser nor a user of carelog.sysusers (%q)", p, user)
			}
			if len(s["StateDirectory"]) != 1 {
				t.Errorf("%s: a component with a user of its own keeps state: want a StateDirectory", p)
			}
		}
		// ExecStart: the binary, its flags, with the default flags from
		// Environment= and the example EnvironmentFile expanded.
		exec := strings.Fields(s["ExecStart"][0])
		if exec[0] != "/usr/local/bin/"+bin {
			t.Errorf("%s: ExecStart runs %s", p, exec[0])
		}
		env := map[string]string{}
		for _, e := range s["Environment"] {
			k, v, _ := strings.Cut(e, "=")
			env[k] = strings.Trim(v, `"`)
		}
		example := envFile(t, "systemd/default/"+bin)
		for _, vars := range []map[string]string{env, example} {
			var args []string
			for _, a := range exec[1:] {
				a = strings.NewReplacer("%d", "/run/credentials/x", "%S", "/var/lib").Replace(a)
				if v, ok := strings.CutPrefix(a, "$"); ok {
					val, ok := vars[v]
					if !ok {
						t.Errorf("%s: ExecStart uses $%s, which is not set", p, v)
					}
					args = append(args, strings.Fields(val)...)
					continue
				}
				args = append(args, a)
			}
			flags := checkFlags(t, p, bin, args)
			for _, f := range listenFlags[bin] {
				if _, ok := flags[f]; !ok && f != "grpc-listen" {
					t.Errorf("%s: no -%s", p, f)
				}
			}
			if st, ok := flags["state"]; ok && st != "/var/lib/"+s["StateDirectory"][0] {
				t.Errorf("%s: -state %s is not its StateDirectory", p, st)
			}
		}
		for k := range example {
			if _, ok := env[k]; !ok {
				t.Errorf("systemd/default/%s sets %s, which the unit does not use", bin, k)
			}
		}
		// LoadCredential'd keys are what ExecStart reads from %d.
		for _, lc := range s["LoadCredential"] {
			name, _, _ := strings.Cut(lc, ":")
			if !strings.Contains(s["ExecStart"][0], "%d/"+name) {
				t.Errorf("%s: credential %s is loaded but not used", p, name)
			}
		}
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: units parsed only")
		return
	}
	// systemd-analyze verify wants the ExecStart binaries to exist.
	dir := t.TempDir()
	var copies []string
	for _, p := range units {
		b, _ := os.ReadFile(p)
		c := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(c, bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(binDir+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, c)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, c := range copies {
		out, err := exec.Command(sa, "security", "--offline=yes", "--threshold=20", c).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure over 2.0 (%v)\n%s", filepath.Base(c), err, lastLines(out, 3))
		}
	}
}

// ---------------------------------------------------------------------------
// The health check probe of the images

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok")
			return
		}
		http.Error(w, "degraded", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		code int
	}{{"/healthz", 0}, {"/other", 1}} {
		err := exec.Command(filepath.Join(binDir, "healthcheck"), srv.URL+tc.path).Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("healthcheck %s: exit %d, want %d", tc.path, code, tc.code)
		}
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	if err := exec.Command(filepath.Join(binDir, "healthcheck"), "http://"+addr+"/healthz").Run(); err == nil {
		t.Error("healthcheck of a closed port exits 0")
	}
}

// ---------------------------------------------------------------------------
// Docs

func TestDocs(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]+)(#[^)]*)?\)`)
	for _, p := range []string{"../docs/operations.md", "README.md"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") {
				continue
			}
			file := filepath.Join(filepath.Dir(p), target)
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s links to %s: %v", p, target, err)
				continue
			}
			if anchor := strings.TrimPrefix(m[2], "#"); anchor != "" && !slices.Contains(headingAnchors(t, file), anchor) {
				t.Errorf("%s links to %s#%s, which has no such heading", p, target, anchor)
			}
		}
	}
	readme, _ := os.ReadFile("README.md")
	if !strings.Contains(string(readme), "not exercised by CI") {
		t.Error("README.md must say that the compose and Kubernetes paths are not exercised by CI")
	}
}

// headingAnchors returns the GitHub anchors of a Markdown file's headings.
func headingAnchors(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	for _, l := range strings.Split(string(b), "\n") {
		h, ok := strings.CutPrefix(l, "#")
		if !ok {
			continue
		}
		h = strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#")))
		var a strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				a.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				a.WriteRune(r)
			}
		}
		anchors = append(anchors, a.String())
	}
	return anchors
}
