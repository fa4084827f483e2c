package witness_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/witness"
	"golang.org/x/mod/sumdb/note"
)

const origin = "example.com/carelog/test"

// TestAddCheckpointStatusCodes sends crafted add-checkpoint requests and
// checks each answer against C2SP tlog-witness.
func TestAddCheckpointStatusCodes(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 16)
	forkA, _ := forkedTrees(3, 16) // shares 3 leaves with nothing above: differs from tree at 5

	other := newTestLog(t, "example.com/other-log")
	impostor := newTestLog(t, origin) // same name as the log, another key

	cp5, cp8 := l.signTree(t, tree, 5), l.signTree(t, tree, 8)
	p58 := consistencyProof(t, tree, 5, 8)

	withExtension := func() []byte {
		text := string(checkpoint.Checkpoint{Origin: origin, Size: 8, Hash: tree.HashAt(8)}.Marshal()) + "carelog-test-extension\n"
		msg, err := note.Sign(&note.Note{Text: text}, l.signer)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	withUnknownSigner := func() []byte {
		skey, _, err := note.GenerateKey(rand.Reader, "someone.else")
		if err != nil {
			t.Fatal(err)
		}
		s, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(checkpoint.Checkpoint{Origin: origin, Size: 8, Hash: tree.HashAt(8)}.Marshal())}, s, l.signer)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	corrupted := func() []byte {
		msg := bytes.Clone(cp8)
		i := bytes.LastIndex(msg, []byte(" ")) + 10 // inside the base64 signature
		if msg[i] == 'A' {
			msg[i] = 'B'
		} else {
			msg[i] = 'A'
		}
		return msg
	}
	flipped := func(p [][]byte) [][]byte {
		q := make([][]byte, len(p))
		for i := range p {
			q[i] = bytes.Clone(p[i])
		}
		q[0][0] ^= 1
		return q
	}
	junk := func(n int) [][]byte {
		p := make([][]byte, n)
		for i := range p {
			p[i] = bytes.Repeat([]byte{byte(i)}, 32)
		}
		return p
	}
	raw := func(s string) func() []byte { return func() []byte { return []byte(s) } }
	req := func(old uint64, proof [][]byte, cp []byte) func() []byte {
		return func() []byte { return addBody(old, proof, cp) }
	}

	const none = -1
	cases := []struct {
		name string
		hold int // size the witness holds before the request; none = never cosigned
		body func() []byte
		code int
		want string // expected body for 409
	}{
		{"first checkpoint", none, req(0, nil, cp5), 200, ""},
		{"extends held checkpoint", 5, req(5, p58, cp8), 200, ""},
		{"same size same root", 5, req(5, nil, cp5), 200, ""},
		{"extension lines", 5, func() []byte { return addBody(5, p58, withExtension()) }, 200, ""},
		{"unknown extra signature ignored", 5, func() []byte { return addBody(5, p58, withUnknownSigner()) }, 200, ""},
		{"empty tree", none, req(0, nil, l.sign(t, 0, checkpoint.EmptyRoot())), 200, ""},

		{"unknown origin", 5, req(0, nil, other.signTree(t, tree, 5)), 404, ""},
		{"unknown key for known origin", 5, req(5, p58, impostor.signTree(t, tree, 8)), 403, ""},
		{"trusted key, bad signature", 5, func() []byte { return addBody(5, p58, corrupted()) }, 403, ""},
		{"unsigned note", 5, req(5, p58, []byte(origin+"\n8\n"+base64.StdEncoding.EncodeToString(tree.HashAt(8))+"\n")), 400, ""},
		{"signed text is not a checkpoint", 5, func() []byte {
			msg, err := note.Sign(&note.Note{Text: origin + "\neight\nroot\n"}, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			return addBody(5, nil, msg)
		}, 400, ""},
		{"control character in note", 5, req(5, p58, bytes.Replace(cp8, []byte("\n8\n"), []byte("\n8\r\n"), 1)), 400, ""},
		{"old larger than checkpoint", 5, req(9, nil, cp8), 400, ""},

		{"old is not the held size", 5, req(3, consistencyProof(t, tree, 3, 8), cp8), 409, "5\n"},
		{"old 0 while holding 5", 5, req(0, nil, cp8), 409, "5\n"},
		{"old 3 while holding nothing", none, req(3, consistencyProof(t, tree, 3, 8), cp8), 409, "0\n"},

		{"proof does not verify", 5, req(5, flipped(p58), cp8), 422, ""},
		{"checkpoint on a fork", 5, req(5, consistencyProof(t, forkA, 5, 8), l.signTree(t, forkA, 8)), 422, ""},
		{"same size different root", 5, req(5, nil, l.signTree(t, forkA, 5)), 422, ""},
		{"proof with old 0", none, req(0, p58, cp8), 422, ""},
		{"size 0 with a non-empty root", none, req(0, nil, l.sign(t, 0, tree.HashAt(1))), 422, ""},
		{"63 proof lines are syntax the witness accepts", 5, req(5, junk(63), cp8), 422, ""},

		{"64 proof lines", 5, req(5, junk(64), cp8), 400, ""},
		{"proof line not base64", 5, raw("old 5\n!!!!\n\n" + string(cp8)), 400, ""},
		{"proof line not 32 bytes", 5, raw("old 5\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n\n" + string(cp8)), 400, ""},
		{"old with leading zero", 5, raw("old 05\n\n" + string(cp8)), 400, ""},
		{"old negative", 5, raw("old -1\n\n" + string(cp8)), 400, ""},
		{"old with plus sign", 5, raw("old +5\n\n" + string(cp8)), 400, ""},
		{"old with trailing space", 5, raw("old 5 \n\n" + string(cp8)), 400, ""},
		{"old keyword misspelt", 5, raw("Old 5\n\n" + string(cp8)), 400, ""},
		{"old without size", 5, raw("old\n\n" + string(cp8)), 400, ""},
		{"empty body", 5, raw(""), 400, ""},
		{"old line only", 5, raw("old 5\n"), 400, ""},
		{"nothing after the empty line", 5, raw("old 5\n\n"), 400, ""},
		{"no empty line before the checkpoint", 5, raw("old 5\n" + string(cp8)), 400, ""},
		{"body over the size limit", 5, raw("old 5\n\n" + strings.Repeat("a", witness.MaxAddCheckpointBody)), 413, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
			if tc.hold != none {
				if a := tw.add(t, 0, nil, l.signTree(t, tree, uint64(tc.hold))); a.code != 200 {
					t.Fatalf("setup: add size %d: %d %s", tc.hold, a.code, a.body)
				}
			}
			body := tc.body()
			a := post(t, tw.url+"/add-checkpoint", body)
			if a.code != tc.code {
				t.Fatalf("status %d (%s), want %d", a.code, a.body, tc.code)
			}
			switch a.code {
			case 200:
				_, cp, _ := bytes.Cut(body, []byte("\n\n")) // after the empty line
				if n := bytes.Count(a.body, []byte("\n")); n != 1 || !bytes.HasPrefix(a.body, []byte("— w.example ")) {
					t.Fatalf("answer %q is not one signature line of the witness", a.body)
				}
				tw.checkCosignature(t, cp, a.body)
				// The monitoring endpoint now serves that checkpoint with
				// the log's signature and the cosignature.
				m := tw.latest(t, l)
				if m.code != 200 {
					t.Fatalf("monitoring endpoint: %d %s", m.code, m.body)
				}
				s, err := checkpoint.Open(m.body, origin, l.verifier, tw.verifier)
				if err != nil {
					t.Fatalf("monitoring endpoint: %v", err)
				}
				if len(s.Opened.Sigs) != 2 {
					t.Fatalf("monitoring endpoint checkpoint has %d verified signatures, want log + witness", len(s.Opened.Sigs))
				}
				if !bytes.Contains(m.body, a.body) {
					t.Errorf("monitoring endpoint does not carry the cosignature returned")
				}
			case 409:
				if a.contentType != witness.ContentTypeSize {
					t.Errorf("Content-Type %q, want %q", a.contentType, witness.ContentTypeSize)
				}
				if string(a.body) != tc.want {
					t.Errorf("body %q, want %q", a.body, tc.want)
				}
			default:
				// Refused: the held checkpoint must not have moved.
				m := tw.latest(t, l)
				if tc.hold == none {
					if m.code != 404 {
						t.Errorf("after a refused request the monitoring endpoint answers %d, want 404", m.code)
					}
					return
				}
				s, err := checkpoint.Open(m.body, origin, l.verifier)
				if err != nil || s.Size != uint64(tc.hold) {
					t.Errorf("after a refused request the witness holds %v (%v), want size %d", s, err, tc.hold)
				}
			}
		})
	}
}

// TestCosignatureCoversExtensionLines checks that the cosignature signs the
// whole note text, extension lines included (C2SP tlog-cosignature), so it
// does not verify on the checkpoint without them.
func TestCosignatureCoversExtensionLines(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 3)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	plain := string(checkpoint.Checkpoint{Origin: origin, Size: 3, Hash: tree.HashAt(3)}.Marshal())
	msg, err := note.Sign(&note.Note{Text: plain + "ext\n"}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	a := tw.add(t, 0, nil, msg)
	if a.code != 200 {
		t.Fatalf("%d %s", a.code, a.body)
	}
	tw.checkCosignature(t, msg, a.body)
	if _, err := note.Open([]byte(plain+"\n"+string(a.body)), note.VerifierList(tw.verifier)); err == nil {
		t.Fatal("the cosignature verifies without the extension line")
	}
}

func TestMonitoringEndpoint(t *testing.T) {
	l := newTestLog(t, origin)
	tree := newTree("leaf", 4)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	if a := tw.latest(t, l); a.code != http.StatusNotFound {
		t.Fatalf("before any cosignature: %d, want 404", a.code)
	}
	if a := get(t, tw.url+"/"+checkpoint.OriginID("example.com/unknown")+"/checkpoint"); a.code != http.StatusNotFound {
		t.Fatalf("unknown log: %d, want 404", a.code)
	}
	if a := tw.add(t, 0, nil, l.signTree(t, tree, 4)); a.code != 200 {
		t.Fatalf("add: %d %s", a.code, a.body)
	}
	a := tw.latest(t, l)
	if a.code != 200 {
		t.Fatalf("%d %s", a.code, a.body)
	}
	s, err := checkpoint.Open(a.body, origin, l.verifier, tw.verifier)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != 4 || !bytes.Equal(s.Hash, tree.HashAt(4)) {
		t.Fatalf("serves size %d root %x, want the cosigned checkpoint", s.Size, s.Hash)
	}
	if len(s.Opened.Sigs) != 2 {
		t.Fatalf("%d verified signatures, want the log's and the witness's", len(s.Opened.Sigs))
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	l := newTestLog(t, origin)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	if a := get(t, tw.url+"/healthz"); a.code != 200 {
		t.Fatalf("healthz: %d", a.code)
	}
	tw.add(t, 0, nil, l.signTree(t, newTree("leaf", 2), 2))
	tw.add(t, 7, nil, l.signTree(t, newTree("leaf", 2), 2))
	a := get(t, tw.url+"/metrics")
	for _, want := range []string{
		`carelog_witness_add_checkpoint_requests_total{code="200"} 1`,
		`carelog_witness_add_checkpoint_requests_total{code="400"} 1`,
		fmt.Sprintf(`carelog_witness_cosigned_tree_size{origin=%q} 2`, origin),
		fmt.Sprintf(`carelog_witness_log_frozen{origin=%q} 0`, origin),
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestPrefix(t *testing.T) {
	l := newTestLog(t, origin)
	tw := startWitness(t, "w.example", witness.Config{Prefix: "/witness/", Logs: []witness.LogConfig{l.config("")}})
	if a := post(t, tw.url+"/witness/add-checkpoint", addBody(0, nil, l.signTree(t, newTree("leaf", 2), 2))); a.code != 200 {
		t.Fatalf("under the prefix: %d %s", a.code, a.body)
	}
	if a := post(t, tw.url+"/add-checkpoint", addBody(2, nil, l.signTree(t, newTree("leaf", 2), 2))); a.code != 404 {
		t.Fatalf("outside the prefix: %d, want 404", a.code)
	}
}

func TestGetAddCheckpointNotAllowed(t *testing.T) {
	l := newTestLog(t, origin)
	tw := startWitness(t, "w.example", witness.Config{Logs: []witness.LogConfig{l.config("")}})
	if a := get(t, tw.url+"/add-checkpoint"); a.code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /add-checkpoint: %d, want 405", a.code)
	}
}
