package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/promise"
	carelogv1 "github.com/carelog/carelog/proto/carelog/v1"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

const fakeOrigin = "carelog.test/fake"

// fakeLog is a hand-written gRPC log whose answers each test shapes, to
// check that the SDK accepts honest answers and catches dishonest ones.
type fakeLog struct {
	carelogv1.UnimplementedLogServer
	t      *testing.T
	signer note.Signer
	// answer makes the answer to one entry; nil answers honestly.
	answer func(raw []byte) (*carelogv1.AddEntryResponse, error)
	// bulk, if set, replaces the honest SubmitBulk.
	bulk func(stream carelogv1.Log_SubmitBulkServer) error
	// checkpoint is what GetCheckpoint serves.
	checkpoint []byte
}

func newKey(t *testing.T, name string) (note.Signer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// startFake serves fl over an in-memory connection and returns an SDK
// client that trusts fl's key.
func startFake(t *testing.T, fl *fakeLog) *client.GRPCLog {
	t.Helper()
	var vkey string
	fl.t = t
	fl.signer, vkey = newKey(t, fakeOrigin)
	ln := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	carelogv1.RegisterLogServer(s, fl)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	l, err := client.New(client.Config{URL: "http://unused.invalid", LogKey: vkey, Policy: checkpoint.NoWitnesses()})
	if err != nil {
		t.Fatal(err)
	}
	g, err := l.DialGRPC("passthrough:///fake",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// honest is the answer a correct log gives to raw.
func (fl *fakeLog) honest(raw []byte, signer note.Signer) *carelogv1.AddEntryResponse {
	lh := checkpoint.LeafHash(raw)
	p, err := promise.Sign(promise.Promise{Origin: fakeOrigin, LeafHash: lh, Accepted: time.Now()}, signer)
	if err != nil {
		fl.t.Error(err)
	}
	return &carelogv1.AddEntryResponse{LeafHash: lh, Promise: []byte(p)}
}

func (fl *fakeLog) AddEntry(_ context.Context, req *carelogv1.AddEntryRequest) (*carelogv1.AddEntryResponse, error) {
	if fl.answer != nil {
		return fl.answer(req.GetEntry())
	}
	return fl.honest(req.GetEntry(), fl.signer), nil
}

func (fl *fakeLog) SubmitBulk(stream carelogv1.Log_SubmitBulkServer) error {
	if fl.bulk != nil {
		return fl.bulk(stream)
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		r, err := fl.AddEntry(stream.Context(), &carelogv1.AddEntryRequest{Entry: req.GetEntry()})
		a := &carelogv1.SubmitBulkResponse{Sequence: req.GetSequence()}
		if err != nil {
			st := status.Convert(err)
			a.Result = &carelogv1.SubmitBulkResponse_Error{Error: &carelogv1.EntryError{Code: uint32(st.Code()), Message: st.Message()}}
		} else {
			a.Result = &carelogv1.SubmitBulkResponse_Accepted{Accepted: r}
		}
		if err := stream.Send(a); err != nil {
			return err
		}
	}
}

func (fl *fakeLog) GetCheckpoint(context.Context, *carelogv1.GetCheckpointRequest) (*carelogv1.GetCheckpointResponse, error) {
	return &carelogv1.GetCheckpointResponse{Checkpoint: fl.checkpoint}, nil
}

func entries(n int) [][]byte {
	es := make([][]byte, n)
	for i := range es {
		es[i] = fmt.Appendf(nil, "entry %d", i)
	}
	return es
}

func TestGRPCSubmitVerifiesTheAnswer(t *testing.T) {
	otherKey, _ := newKey(t, fakeOrigin)
	index := uint64(7)
	for _, tc := range []struct {
		name    string
		answer  func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error)
		wantErr bool
		want    codes.Code // of the error, if the log refused
	}{
		{"honest", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			return fl.honest(raw, fl.signer), nil
		}, false, codes.OK},
		{"honest, sequenced", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			r := fl.honest(raw, fl.signer)
			r.Index = &index
			return r, nil
		}, false, codes.OK},
		{"another entry's leaf hash", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			r := fl.honest([]byte("other"), fl.signer)
			return r, nil
		}, true, codes.Unknown},
		{"promise by another key", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			return fl.honest(raw, otherKey), nil
		}, true, codes.Unknown},
		{"promise for another leaf", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			r := fl.honest(raw, fl.signer)
			r.Promise = fl.honest([]byte("other"), fl.signer).Promise
			return r, nil
		}, true, codes.Unknown},
		{"refused", func(fl *fakeLog, raw []byte) (*carelogv1.AddEntryResponse, error) {
			return nil, status.Error(codes.PermissionDenied, "entry: signature does not verify")
		}, true, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := &fakeLog{}
			fl.answer = func(raw []byte) (*carelogv1.AddEntryResponse, error) { return tc.answer(fl, raw) }
			g := startFake(t, fl)
			res, err := g.Submit(context.Background(), []byte("an entry"))
			if tc.wantErr {
				if err == nil {
					t.Fatal("the SDK accepted the answer")
				}
				if got := status.Code(err); got != tc.want {
					t.Fatalf("error %v has code %v, want %v", err, got, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Sequenced != (tc.name == "honest, sequenced") || (res.Sequenced && res.Index != index) {
				t.Fatalf("got %+v", res)
			}
		})
	}
}

func TestGRPCSubmitBulkOutOfOrder(t *testing.T) {
	fl := &fakeLog{}
	// Answer only after the client closes its side, in reverse order, with
	// entry 3 refused.
	fl.bulk = func(stream carelogv1.Log_SubmitBulkServer) error {
		var reqs []*carelogv1.SubmitBulkRequest
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			reqs = append(reqs, req)
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			a := &carelogv1.SubmitBulkResponse{Sequence: reqs[i].GetSequence()}
			if i == 3 {
				a.Result = &carelogv1.SubmitBulkResponse_Error{Error: &carelogv1.EntryError{
					Code: uint32(codes.InvalidArgument), Message: `entry field "purpose": unknown code`}}
			} else {
				a.Result = &carelogv1.SubmitBulkResponse_Accepted{Accepted: fl.honest(reqs[i].GetEntry(), fl.signer)}
			}
			if err := stream.Send(a); err != nil {
				return err
			}
		}
		return nil
	}
	g := startFake(t, fl)
	es := entries(10)
	results, err := g.SubmitBulk(context.Background(), es)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if i == 3 {
			if status.Code(r.Err) != codes.InvalidArgument || status.Convert(r.Err).Message() != `entry field "purpose": unknown code` || r.Result != nil {
				t.Errorf("entry 3: got %+v, want its INVALID_ARGUMENT error", r)
			}
			continue
		}
		if r.Err != nil || string(r.Result.LeafHash) != string(checkpoint.LeafHash(es[i])) {
			t.Errorf("entry %d: got %+v, want its own verified result", i, r)
		}
	}
}

func TestGRPCSubmitBulkBrokenStream(t *testing.T) {
	fl := &fakeLog{}
	// Answer the first four honestly, then fail the stream.
	fl.bulk = func(stream carelogv1.Log_SubmitBulkServer) error {
		for i := 0; i < 4; i++ {
			req, err := stream.Recv()
			if err != nil {
				return err
			}
			if err := stream.Send(&carelogv1.SubmitBulkResponse{Sequence: req.GetSequence(),
				Result: &carelogv1.SubmitBulkResponse_Accepted{Accepted: fl.honest(req.GetEntry(), fl.signer)}}); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "going away")
	}
	g := startFake(t, fl)
	results, err := g.SubmitBulk(context.Background(), entries(10))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want the stream's UNAVAILABLE", err)
	}
	for i, r := range results {
		switch {
		case i < 4 && (r.Err != nil || r.Result == nil):
			t.Errorf("entry %d was answered, got %+v", i, r)
		case i >= 4 && !errors.Is(r.Err, client.ErrNotAnswered):
			t.Errorf("entry %d was not answered, got %+v", i, r)
		}
	}
}

func TestGRPCSubmitBulkProtocolViolations(t *testing.T) {
	for name, answer := range map[string]func(seq uint64) *carelogv1.SubmitBulkResponse{
		"unknown sequence number": func(seq uint64) *carelogv1.SubmitBulkResponse {
			return &carelogv1.SubmitBulkResponse{Sequence: seq + 100, Result: &carelogv1.SubmitBulkResponse_Error{Error: &carelogv1.EntryError{Code: 3}}}
		},
		"same sequence number twice": func(seq uint64) *carelogv1.SubmitBulkResponse {
			return &carelogv1.SubmitBulkResponse{Sequence: 0, Result: &carelogv1.SubmitBulkResponse_Error{Error: &carelogv1.EntryError{Code: 3}}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			fl := &fakeLog{}
			fl.bulk = func(stream carelogv1.Log_SubmitBulkServer) error {
				for {
					req, err := stream.Recv()
					if err != nil {
						return nil
					}
					if err := stream.Send(answer(req.GetSequence())); err != nil {
						return err
					}
				}
			}
			g := startFake(t, fl)
			if _, err := g.SubmitBulk(context.Background(), entries(3)); err == nil {
				t.Fatal("the SDK accepted a bulk answer that breaks the protocol")
			}
		})
	}
}

func TestGRPCCheckpointVerified(t *testing.T) {
	fl := &fakeLog{}
	g := startFake(t, fl)
	cp := checkpoint.Checkpoint{Origin: fakeOrigin, Size: 0, Hash: checkpoint.EmptyRoot()}
	var err error
	if fl.checkpoint, err = checkpoint.Sign(cp, fl.signer); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Checkpoint(context.Background()); err != nil {
		t.Fatalf("honest checkpoint: %v", err)
	}
	forger, _ := newKey(t, fakeOrigin)
	if fl.checkpoint, err = checkpoint.Sign(cp, forger); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Checkpoint(context.Background()); !errors.Is(err, checkpoint.ErrNoLogSignature) {
		t.Fatalf("forged checkpoint: got %v, want ErrNoLogSignature", err)
	}
}
