package personality

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/carelog/carelog/promise"
	carelogv1 "github.com/carelog/carelog/proto/carelog/v1"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// serveGRPCForTest serves f's gRPC API on a loopback port, as Run does, and
// returns a connection to it. Both end with the test.
func serveGRPCForTest(t *testing.T, f *fixture) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	stop := f.log.serveGRPCOn(ln, errc)
	t.Cleanup(func() {
		stop()
		select {
		case err := <-errc:
			t.Errorf("gRPC server failed: %v", err)
		default:
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (f *fixture) verifier() note.Verifier {
	f.t.Helper()
	v, err := note.NewVerifier(f.logVKey)
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// signed returns a signed entry of a fresh event, after mutate (if any)
// changes the event; mutations that break the schema are signed as is.
func (f *fixture) signed(mutate func(*entry.Event)) []byte {
	f.t.Helper()
	ev := f.gen.Next(time.Now())
	if mutate != nil {
		mutate(ev)
	}
	line, err := json.Marshal(ev)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := entry.SignLine(line, f.sub)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// waitForCheckpoint signs checkpoints until one of at least size is
// published over gRPC, and returns it verified with the log key.
func waitForCheckpoint(ctx context.Context, t *testing.T, f *fixture, rpc carelogv1.LogClient, size uint64) *checkpoint.Signed {
	t.Helper()
	for {
		if err := f.log.SignCheckpoint(ctx); err != nil {
			t.Fatalf("signing a checkpoint: %v", err)
		}
		r, err := rpc.GetCheckpoint(ctx, &carelogv1.GetCheckpointRequest{})
		if err == nil {
			cp, err := checkpoint.Open(r.GetCheckpoint(), testOrigin, f.verifier())
			if err != nil {
				t.Fatalf("the checkpoint served over gRPC does not verify: %v", err)
			}
			if cp.Size >= size {
				return cp
			}
		} else if status.Code(err) != codes.Unavailable {
			t.Fatalf("GetCheckpoint: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no checkpoint of size %d before the deadline", size)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkAccepted checks an answer to raw: the entry's leaf hash and a
// promise for it that verifies with the log key.
func checkAccepted(t *testing.T, f *fixture, raw []byte, r *carelogv1.AddEntryResponse) {
	t.Helper()
	if !bytes.Equal(r.GetLeafHash(), checkpoint.LeafHash(raw)) {
		t.Fatalf("answer has leaf hash %x, want the entry's", r.GetLeafHash())
	}
	p, err := promise.Open(r.GetPromise(), testOrigin, f.verifier())
	if err != nil {
		t.Fatalf("promise does not verify: %v", err)
	}
	if !bytes.Equal(p.LeafHash, r.GetLeafHash()) {
		t.Fatal("promise is for another leaf")
	}
}

func TestGRPCSubmitAndRead(t *testing.T) {
	for _, storage := range []string{"memory", ""} {
		name := storage
		if name == "" {
			name = "mariadb"
		}
		t.Run(name, func(t *testing.T) { testGRPCSubmitAndRead(t, newFixture(t, storage)) })
	}
}

func testGRPCSubmitAndRead(t *testing.T, f *fixture) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rpc := carelogv1.NewLogClient(serveGRPCForTest(t, f))
	verifier := f.verifier()
	var accepted [][]byte // every entry the log accepted, once

	// One entry, then the same bytes again: the original's answer.
	first := f.signedEvent()
	r1, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: first})
	if err != nil {
		t.Fatal(err)
	}
	checkAccepted(t, f, first, r1)
	if r1.Index != nil {
		t.Fatalf("a new entry came back with index %d; it cannot be sequenced yet", r1.GetIndex())
	}
	again, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: first})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.GetPromise(), r1.GetPromise()) {
		t.Fatal("a duplicate got a new promise, want the original's")
	}
	accepted = append(accepted, first)
	cp1 := waitForCheckpoint(ctx, t, f, rpc, 1)

	// Refusals carry the HTTP API's message under the mapped code.
	conflictEv := f.gen.Next(time.Now())
	conflictA, err := entry.Sign(conflictEv, f.sub)
	if err != nil {
		t.Fatal(err)
	}
	conflictEv.Purpose = "ETREAT"
	conflictB, err := entry.Sign(conflictEv, f.sub)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: conflictA}); err != nil {
		t.Fatal(err)
	} else {
		checkAccepted(t, f, conflictA, r)
	}
	accepted = append(accepted, conflictA)
	tampered := tamper(t, f.signedEvent())
	for _, tc := range []struct {
		name  string
		entry []byte
		want  codes.Code
	}{
		{"not a note", []byte("hello"), codes.PermissionDenied},
		{"two lines of text", []byte("{}\n{}\n\n— x y\n"), codes.InvalidArgument},
		{"bad purpose", f.signed(func(e *entry.Event) { e.Purpose = "GOSSIP" }), codes.InvalidArgument},
		{"oversize", bytes.Repeat([]byte("x"), entry.MaxEntrySize+1), codes.InvalidArgument},
		{"tampered", tampered, codes.PermissionDenied},
		{"unknown submitter", otherSubmitterEntry(t), codes.PermissionDenied},
		{"event id reused", conflictB, codes.AlreadyExists},
	} {
		_, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: tc.entry})
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.want)
			continue
		}
		_, _, herr := f.log.AddEntry(ctx, tc.entry)
		if _, msg := HTTPStatus(herr); status.Convert(err).Message() != msg {
			t.Errorf("%s: gRPC says %q, HTTP says %q", tc.name, status.Convert(err).Message(), msg)
		}
	}

	// A bulk stream with one bad entry in the middle: every entry is
	// answered once under its sequence number, and only the bad one fails.
	const n, bad = 300, 150
	bulk := make([][]byte, n)
	for i := range bulk {
		bulk[i] = f.signedEvent()
	}
	bulk[bad] = tamper(t, bulk[bad])
	stream, err := rpc.SubmitBulk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i, e := range bulk {
			// Sequence numbers need not be positions; make them differ.
			if err := stream.Send(&carelogv1.SubmitBulkRequest{Sequence: uint64(1000 + i), Entry: e}); err != nil {
				return
			}
		}
		_ = stream.CloseSend()
	}()
	answered := make(map[uint64]bool)
	for {
		a, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("bulk stream: %v", err)
		}
		seq := a.GetSequence()
		if seq < 1000 || seq >= 1000+n || answered[seq] {
			t.Fatalf("bulk answer with unexpected sequence number %d", seq)
		}
		answered[seq] = true
		i := int(seq - 1000)
		switch {
		case i == bad:
			if e := a.GetError(); e == nil || codes.Code(e.GetCode()) != codes.PermissionDenied || !strings.Contains(e.GetMessage(), "signature") {
				t.Errorf("the tampered entry got %v, want a PERMISSION_DENIED error about its signature", a)
			}
		case a.GetError() != nil:
			t.Errorf("entry %d refused: %v", i, a.GetError())
		default:
			checkAccepted(t, f, bulk[i], a.GetAccepted())
			accepted = append(accepted, bulk[i])
		}
	}
	if len(answered) != n {
		t.Fatalf("bulk stream answered %d entries, want %d", len(answered), n)
	}

	// Everything accepted is in a signed checkpoint, provably, and the
	// entries read back are exactly the accepted ones.
	cp := waitForCheckpoint(ctx, t, f, rpc, uint64(len(accepted)))
	if cp.Size != uint64(len(accepted)) {
		t.Fatalf("checkpoint has size %d, want %d (one leaf per accepted entry)", cp.Size, len(accepted))
	}
	cr, err := rpc.GetConsistencyProof(ctx, &carelogv1.GetConsistencyProofRequest{OldSize: cp1.Size, TreeSize: cp.Size})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.VerifyConsistency(cp1.Checkpoint, cp.Checkpoint, cr.GetProof()); err != nil {
		t.Fatal(err)
	}
	index := make(map[string]uint64)
	for _, raw := range accepted {
		ip, err := rpc.GetInclusionProof(ctx, &carelogv1.GetInclusionProofRequest{LeafHash: checkpoint.LeafHash(raw), TreeSize: cp.Size})
		if err != nil {
			t.Fatal(err)
		}
		if err := checkpoint.VerifyInclusion(cp.Checkpoint, ip.GetIndex(), checkpoint.LeafHash(raw), ip.GetProof()); err != nil {
			t.Fatal(err)
		}
		index[string(raw)] = ip.GetIndex()
	}
	er, err := rpc.GetEntries(ctx, &carelogv1.GetEntriesRequest{Start: 0, End: cp.Size + 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(er.GetEntries()) != int(cp.Size) {
		t.Fatalf("got %d entries, want %d", len(er.GetEntries()), cp.Size)
	}
	for i, e := range er.GetEntries() {
		if idx, ok := index[string(e.GetData())]; !ok || e.GetIndex() != uint64(i) || idx != uint64(i) {
			t.Fatalf("entry %d (index %d) is not the accepted entry proved at that index", i, e.GetIndex())
		}
	}

	// An offline bundle verifies with the log key alone.
	br, err := rpc.GetProofBundle(ctx, &carelogv1.GetProofBundleRequest{LeafHash: checkpoint.LeafHash(first)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.OpenBundle(br.GetBundle(), testOrigin, verifier, checkpoint.NoWitnesses())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Entry, first) || b.Index != index[string(first)] {
		t.Fatalf("bundle proves index %d, want the first entry at %d", b.Index, index[string(first)])
	}

	// Once sequenced, a duplicate's answer has the index.
	again, err = rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: first})
	if err != nil {
		t.Fatal(err)
	}
	if again.Index == nil || again.GetIndex() != index[string(first)] || !bytes.Equal(again.GetPromise(), r1.GetPromise()) {
		t.Fatalf("duplicate after sequencing answered %v, want index %d and the original promise", again, index[string(first)])
	}

	// Bad reads.
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"inclusion of an unknown leaf", func() error {
			_, err := rpc.GetInclusionProof(ctx, &carelogv1.GetInclusionProofRequest{LeafHash: make([]byte, 32), TreeSize: cp.Size})
			return err
		}, codes.NotFound},
		{"inclusion beyond the checkpoint", func() error {
			_, err := rpc.GetInclusionProof(ctx, &carelogv1.GetInclusionProofRequest{LeafHash: checkpoint.LeafHash(first), TreeSize: cp.Size + 1})
			return err
		}, codes.InvalidArgument},
		{"short leaf hash", func() error {
			_, err := rpc.GetInclusionProof(ctx, &carelogv1.GetInclusionProofRequest{LeafHash: []byte{1}, TreeSize: 1})
			return err
		}, codes.InvalidArgument},
		{"consistency backwards", func() error {
			_, err := rpc.GetConsistencyProof(ctx, &carelogv1.GetConsistencyProofRequest{OldSize: 2, TreeSize: 1})
			return err
		}, codes.InvalidArgument},
		{"entries beyond the checkpoint", func() error {
			_, err := rpc.GetEntries(ctx, &carelogv1.GetEntriesRequest{Start: cp.Size, End: cp.Size + 1})
			return err
		}, codes.NotFound},
		{"too many entries", func() error {
			_, err := rpc.GetEntries(ctx, &carelogv1.GetEntriesRequest{Start: 0, End: 1001})
			return err
		}, codes.InvalidArgument},
		{"bundle of a short hash", func() error {
			_, err := rpc.GetProofBundle(ctx, &carelogv1.GetProofBundleRequest{LeafHash: []byte("x")})
			return err
		}, codes.InvalidArgument},
		{"bundle of an unknown leaf", func() error {
			_, err := rpc.GetProofBundle(ctx, &carelogv1.GetProofBundleRequest{LeafHash: make([]byte, 32)})
			return err
		}, codes.NotFound},
	} {
		if got := status.Code(tc.call()); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// tamper changes the event id inside a signed entry, keeping the JSON
// valid, so only the signature is wrong.
func tamper(t *testing.T, raw []byte) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte(`"id":"`))
	if i < 0 {
		t.Fatal("no event id in the entry")
	}
	out := bytes.Clone(raw)
	j := i + len(`"id":"`)
	if out[j] == '0' {
		out[j] = '1'
	} else {
		out[j] = '0'
	}
	return out
}

// otherSubmitterEntry is a well-formed entry signed by a submitter the log
// does not know.
func otherSubmitterEntry(t *testing.T) []byte {
	t.Helper()
	skey, _, err := submitter.GenerateEd25519("ehr.unregistered")
	if err != nil {
		t.Fatal(err)
	}
	s, err := submitter.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	b, err := entry.Sign(ehrsim.New("ehr.unregistered", 2).Next(time.Now()), s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGRPCClient runs the SDK's gRPC client against the real service: it
// verifies promises, checkpoints, proofs and bundles with the log key.
func TestGRPCClient(t *testing.T) {
	f := newFixture(t, "memory")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := serveGRPCForTest(t, f)
	g := f.client.GRPC(conn)

	one := f.signedEvent()
	res, err := g.Submit(ctx, one)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sequenced {
		t.Fatal("a new entry came back sequenced")
	}
	first := waitForCheckpoint(ctx, t, f, carelogv1.NewLogClient(conn), 1)
	if _, err := g.Submit(ctx, tamper(t, f.signedEvent())); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tampered entry: got %v, want PERMISSION_DENIED", err)
	}

	entries := make([][]byte, 40)
	for i := range entries {
		entries[i] = f.signedEvent()
	}
	entries[7] = one // a duplicate is answered like the original
	entries[20] = []byte("garbage")
	results, err := g.SubmitBulk(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		switch {
		case i == 20:
			if status.Code(r.Err) != codes.PermissionDenied {
				t.Errorf("garbage entry: got %v, want PERMISSION_DENIED", r.Err)
			}
		case r.Err != nil:
			t.Errorf("entry %d: %v", i, r.Err)
		case i == 7 && r.Result.Promise != res.Promise:
			t.Error("the duplicate in the bulk got a new promise")
		}
	}

	waitForCheckpoint(ctx, t, f, carelogv1.NewLogClient(conn), 39)
	cp, err := g.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != 39 {
		t.Fatalf("checkpoint size %d, want 39", cp.Size)
	}
	if err := g.VerifyConsistency(ctx, first.Checkpoint, cp.Checkpoint); err != nil {
		t.Fatal(err)
	}
	idx, err := g.VerifyInclusion(ctx, res.LeafHash, cp.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := g.ProofBundle(ctx, res.LeafHash)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.client.OpenBundle(bundle); err != nil || b.Index != idx {
		t.Fatalf("bundle: %v, index %v, want %d", err, b, idx)
	}
	es, err := g.Entries(ctx, idx, idx+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || !bytes.Equal(es[0].Data, one) {
		t.Fatal("entry read back differs from the one submitted")
	}
}

// TestGRPCBulkRateLimit: a submitter over its rate limit gets
// RESOURCE_EXHAUSTED for the entries beyond its burst, and the stream goes on.
func TestGRPCBulkRateLimit(t *testing.T) {
	f := newFixture(t, "memory")
	f.stop()
	f.cfg.RateLimit, f.cfg.RateBurst = 0.001, 5
	f.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := f.client.GRPC(serveGRPCForTest(t, f))
	entries := make([][]byte, 12)
	for i := range entries {
		entries[i] = f.signedEvent()
	}
	results, err := g.SubmitBulk(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	ok, limited := 0, 0
	for _, r := range results {
		switch {
		case r.Err == nil:
			ok++
		case status.Code(r.Err) == codes.ResourceExhausted:
			limited++
		default:
			t.Errorf("unexpected error: %v", r.Err)
		}
	}
	if ok != 5 || limited != 7 {
		t.Fatalf("%d accepted and %d rate-limited, want 5 and 7", ok, limited)
	}
}

func TestGRPCCode(t *testing.T) {
	for httpStatus, want := range map[int]codes.Code{
		http.StatusBadRequest:            codes.InvalidArgument,
		http.StatusRequestEntityTooLarge: codes.InvalidArgument,
		http.StatusForbidden:             codes.PermissionDenied,
		http.StatusNotFound:              codes.NotFound,
		http.StatusConflict:              codes.AlreadyExists,
		http.StatusTooManyRequests:       codes.ResourceExhausted,
		http.StatusServiceUnavailable:    codes.Unavailable,
		http.StatusInternalServerError:   codes.Internal,
		http.StatusTeapot:                codes.Internal,
	} {
		if got := grpcCode(httpStatus); got != want {
			t.Errorf("HTTP %d maps to %v, want %v", httpStatus, got, want)
		}
	}
}

// TestGRPCServeAndStop: serveGRPC refuses an address in use, and after stop
// the server answers no more.
func TestGRPCServeAndStop(t *testing.T) {
	f := newFixture(t, "memory")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := f.log.serveGRPC(busy.Addr().String(), make(chan error, 1)); err == nil {
		t.Fatal("serveGRPC on an address in use succeeded")
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := f.log.serveGRPCOn(ln, make(chan error, 1))
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rpc := carelogv1.NewLogClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: f.signedEvent()}); err != nil {
		t.Fatal(err)
	}
	stop()
	stop() // idempotent
	if _, err := rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: f.signedEvent()}); status.Code(err) != codes.Unavailable {
		t.Fatalf("after stop: got %v, want UNAVAILABLE", err)
	}
}
