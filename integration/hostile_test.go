package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/internal/testdb"
)

type hostile struct {
	name, method, path, contentType string
	body                            []byte
	// want: the exact status, or 0 for "any 4xx".
	want int
}

// TestHostileInput sends malformed, oversize, wrongly typed and slow
// requests to every endpoint of the log, a witness and the monitor. Each
// must get a clean 4xx (JSON error where the protocol has one), and every
// component must keep serving.
func TestHostileInput(t *testing.T) {
	k := newKeyset(t)
	w := newWitnessKeys(t, "wh.test")
	w.start(t, witnessConfig{Logs: []map[string]string{{"origin": k.origin, "key": k.logVKey}}})
	policy := policyFor(t, 1, w)
	lg := startLog(t, k, testdb.New(t), "--policy", policy)
	mconf := newMonitorConf(t, k, lg.url(), policy)
	mconf.addWitness(w)
	mon := serveMonitor(t, mconf)
	c := policyClient(t, lg.url(), k.logVKey, policy)
	submitN(t, t.Context(), c, k, signedGen(k), 3)
	waitFor(t, "a checkpoint of 3", time.Minute, func() (bool, error) {
		cp, err := c.Checkpoint(t.Context())
		return err == nil && cp.Size == 3, err
	})

	big := bytes.Repeat([]byte("A"), 1<<20)
	logCases := []hostile{
		{"add-entry empty", "POST", "/add-entry", "text/plain", nil, 403},
		{"add-entry JSON, unsigned", "POST", "/add-entry", "application/json", []byte(`{"v":1}`), 403},
		{"add-entry binary", "POST", "/add-entry", "application/octet-stream", []byte{0xff, 0xfe, 0, 1, 2, '\n', '\n'}, 400},
		{"add-entry oversize", "POST", "/add-entry", "text/plain", big, 413},
		{"add-entry forged signature line", "POST", "/add-entry", "text/plain", []byte("{}\n\n— ehr.integration AAAA\n"), 0},
		{"add-entry GET", "GET", "/add-entry", "", nil, 405},
		{"inclusion no params", "GET", "/proof/inclusion", "", nil, 400},
		{"inclusion bad hash", "GET", "/proof/inclusion?hash=%%%&size=1", "", nil, 400},
		{"inclusion short hash", "GET", "/proof/inclusion?hash=AAAA&size=1", "", nil, 400},
		{"inclusion huge size", "GET", "/proof/inclusion?hash=" + strings.Repeat("A", 43) + "&size=99999999999999", "", nil, 400},
		{"inclusion negative size", "GET", "/proof/inclusion?hash=" + strings.Repeat("A", 43) + "&size=-1", "", nil, 400},
		{"inclusion unknown leaf", "GET", "/proof/inclusion?hash=" + strings.Repeat("A", 43) + "&size=1", "", nil, 404},
		{"consistency reversed", "GET", "/proof/consistency?old=3&size=1", "", nil, 400},
		{"consistency overflow", "GET", "/proof/consistency?old=1&size=18446744073709551616", "", nil, 400},
		{"entries too many", "GET", "/entries?start=0&end=100000", "", nil, 400},
		{"entries beyond", "GET", "/entries?start=1000000&end=1000001", "", nil, 404},
		{"entries reversed", "GET", "/entries?start=2&end=1", "", nil, 400},
		{"bundle no hash", "GET", "/proof/bundle", "", nil, 400},
		{"patients bad pseudonym", "GET", "/patients/not-a-pseudonym/events", "", nil, 400},
		{"tile malformed", "GET", "/tile/0/abc", "", nil, 400},
		{"tile beyond", "GET", "/tile/0/x999/999", "", nil, 404},
		{"no such endpoint", "GET", "/admin", "", nil, 404},
		{"path traversal", "GET", "/../../etc/passwd", "", nil, 0},
	}
	witnessCases := []hostile{
		{"add-checkpoint empty", "POST", "/add-checkpoint", "text/plain", nil, 400},
		{"add-checkpoint garbage", "POST", "/add-checkpoint", "text/plain", []byte("hello"), 400},
		{"add-checkpoint oversize", "POST", "/add-checkpoint", "text/plain", big, 413},
		{"add-checkpoint binary", "POST", "/add-checkpoint", "application/octet-stream", []byte{0, 1, 2, 3}, 400},
		{"add-checkpoint GET", "GET", "/add-checkpoint", "", nil, 405},
		{"monitoring unknown log", "GET", "/" + strings.Repeat("0", 64) + "/checkpoint", "", nil, 404},
		{"monitoring bad id", "GET", "/zzz/checkpoint", "", nil, 404},
	}
	monitorCases := []hostile{
		{"promise garbage", "POST", "/promises", "text/plain", []byte("hello"), 400},
		{"promise oversize", "POST", "/promises", "text/plain", big, 413},
		{"promise JSON without promise", "POST", "/promises", "application/json", []byte(`{"x":1}`), 400},
		{"alerts bad filter", "GET", "/alerts?after=abc", "", nil, 400},
		{"peer checkpoint unknown log", "GET", "/" + strings.Repeat("0", 64) + "/checkpoint", "", nil, 404},
	}
	for _, comp := range []struct {
		name  string
		url   string
		cases []hostile
		json  bool
	}{{"log", lg.url(), logCases, true}, {"witness", w.url(), witnessCases, true}, {"monitor", mon.url(), monitorCases, true}} {
		for _, h := range comp.cases {
			t.Run(comp.name+"/"+h.name, func(t *testing.T) {
				req, err := http.NewRequest(h.method, comp.url+h.path, bytes.NewReader(h.body))
				if err != nil {
					t.Fatalf("building the request: %v", err) // every case must reach the server
				}
				if h.contentType != "" {
					req.Header.Set("Content-Type", h.contentType)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				if h.want != 0 && resp.StatusCode != h.want || resp.StatusCode < 400 || resp.StatusCode >= 500 {
					t.Fatalf("%s %s: status %d (%s), want %v", h.method, h.path, resp.StatusCode, b, h.want)
				}
				if comp.json && resp.StatusCode != http.StatusMethodNotAllowed && strings.Contains(resp.Header.Get("Content-Type"), "json") {
					var e struct {
						Error string `json:"error"`
					}
					if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
						t.Fatalf("error body is not {\"error\": ...}: %s", b)
					}
				}
			})
		}
	}

	// Slow clients: connections that trickle half a request must not stop
	// anyone else from being served, and are closed by the server.
	var slow []net.Conn
	for _, u := range []string{lg.url(), w.url(), mon.url()} {
		for i := 0; i < 20; i++ {
			conn, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "POST /add-entry HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n")
			slow = append(slow, conn)
		}
	}
	// Everyone still serves.
	if _, err := c.Checkpoint(t.Context()); err != nil {
		t.Fatalf("log stopped serving: %v", err)
	}
	submitN(t, t.Context(), c, k, signedGen(k), 1)
	for _, u := range []string{w.url() + "/healthz", mon.url() + "/status", lg.url() + "/healthz"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	// The servers drop the slow connections (header timeouts).
	for _, conn := range slow {
		_ = conn.SetReadDeadline(time.Now().Add(40 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("a slow connection was not closed by the server: %v", err)
		}
		conn.Close()
	}
}
