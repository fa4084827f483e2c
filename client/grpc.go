package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	carelogv1 "github.com/carelog/carelog/proto/carelog/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMaxResponse is the largest answer the SDK accepts over gRPC; the log
// may send up to 16 MiB (a full GetEntries page).
const grpcMaxResponse = 16 << 20

// GRPCLog talks to a carelog log over its gRPC API (proto/carelog/v1). It
// trusts the log no more than Log does: every promise, checkpoint and proof
// is verified with the log key and witness policy of the Log it came from.
//
// Errors from the log are gRPC status errors (wrapped): status.Code(err)
// gives the code, which means what the HTTP API's status would (see
// proto/carelog/v1/log.proto).
type GRPCLog struct {
	log  *Log
	rpc  carelogv1.LogClient
	conn *grpc.ClientConn // set when DialGRPC opened it, so Close closes it
}

// GRPC returns a gRPC client of this log over conn, which the caller owns.
func (l *Log) GRPC(conn grpc.ClientConnInterface) *GRPCLog {
	return &GRPCLog{log: l, rpc: carelogv1.NewLogClient(conn)}
}

// DialGRPC opens a connection to the log's gRPC API at target (e.g.
// "dns:///log.example:9090") and returns a client of it; Close releases it.
// Pass the transport credentials in opts: grpc.WithTransportCredentials with
// TLS, or insecure.NewCredentials() on a trusted network. Entries, promises
// and checkpoints are signed, so integrity never depends on the transport.
func (l *Log) DialGRPC(target string, opts ...grpc.DialOption) (*GRPCLog, error) {
	opts = append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcMaxResponse))}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: gRPC %s: %w", target, err)
	}
	g := l.GRPC(conn)
	g.conn = conn
	return g, nil
}

// Close closes the connection DialGRPC opened; it does nothing for a client
// made with Log.GRPC.
func (g *GRPCLog) Close() error {
	if g.conn == nil {
		return nil
	}
	return g.conn.Close()
}

// Submit sends a signed entry (see entry.Sign) and verifies the promise
// that comes back, as Log.Submit does over HTTP.
func (g *GRPCLog) Submit(ctx context.Context, signedEntry []byte) (*SubmitResult, error) {
	r, err := g.rpc.AddEntry(ctx, &carelogv1.AddEntryRequest{Entry: signedEntry})
	if err != nil {
		return nil, fmt.Errorf("client: gRPC AddEntry: %w", err)
	}
	return g.log.submitResult(signedEntry, r.GetLeafHash(), string(r.GetPromise()), r.Index)
}

// BulkResult is the outcome of one entry of SubmitBulk: exactly one of
// Result and Err is set.
type BulkResult struct {
	// Result is the log's verified answer, as Submit returns it.
	Result *SubmitResult
	// Err says why the entry was not accepted. A refusal by the log is a
	// gRPC status error (status.Code gives its code); nothing of the entry
	// was stored. An entry left unanswered because the stream broke carries
	// the stream's error, and can be submitted again: duplicates are safe.
	Err error
}

// ErrNotAnswered is wrapped in the Err of entries the log never answered
// because the bulk stream ended early.
var ErrNotAnswered = errors.New("client: the bulk stream ended before the log answered this entry")

// SubmitBulk sends signed entries over one SubmitBulk stream and returns
// one result per entry, in the order of entries. One refused entry does not
// stop the others. The error is non-nil only when the stream itself failed
// or the log broke the protocol; the results then still say which entries
// were answered.
func (g *GRPCLog) SubmitBulk(ctx context.Context, entries [][]byte) ([]BulkResult, error) {
	results := make([]BulkResult, len(entries))
	if len(entries) == 0 {
		return results, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.rpc.SubmitBulk(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: gRPC SubmitBulk: %w", err)
	}
	sent := make(chan error, 1)
	go func() {
		for i, e := range entries {
			// The sequence number is the entry's position in entries.
			if err := stream.Send(&carelogv1.SubmitBulkRequest{Sequence: uint64(i), Entry: e}); err != nil {
				sent <- err // io.EOF: the log ended the stream; Recv says why
				return
			}
		}
		sent <- stream.CloseSend()
	}()

	answered := 0
	var streamErr error
	for answered < len(entries) {
		a, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			streamErr = errors.New("client: gRPC SubmitBulk: the log ended the stream early")
			break
		}
		if err != nil {
			streamErr = fmt.Errorf("client: gRPC SubmitBulk: %w", err)
			break
		}
		seq := a.GetSequence()
		if seq >= uint64(len(entries)) || results[seq].Result != nil || results[seq].Err != nil {
			streamErr = fmt.Errorf("client: gRPC SubmitBulk: the log answered sequence number %d, which is not one awaiting an answer", seq)
			break
		}
		switch r := a.GetResult().(type) {
		case *carelogv1.SubmitBulkResponse_Accepted:
			res, err := g.log.submitResult(entries[seq], r.Accepted.GetLeafHash(), string(r.Accepted.GetPromise()), r.Accepted.Index)
			results[seq] = BulkResult{Result: res, Err: err}
		case *carelogv1.SubmitBulkResponse_Error:
			code := codes.Code(r.Error.GetCode())
			if code == codes.OK {
				code = codes.Unknown // a refusal must not read as success
			}
			results[seq].Err = status.Error(code, r.Error.GetMessage())
		default:
			results[seq].Err = errors.New("client: the log's answer has neither a result nor an error")
		}
		answered++
	}
	if streamErr == nil {
		// Every entry is answered, so the sender is done; read the end of
		// the stream so the log finishes the call cleanly.
		_, _ = stream.Recv()
		if err := <-sent; err != nil && !errors.Is(err, io.EOF) {
			streamErr = fmt.Errorf("client: gRPC SubmitBulk: %w", err)
		}
		return results, streamErr
	}
	for i := range results {
		if results[i].Result == nil && results[i].Err == nil {
			results[i].Err = fmt.Errorf("%w: %w", ErrNotAnswered, streamErr)
		}
	}
	return results, streamErr
}

// Checkpoint fetches the log's checkpoint and verifies its log signature and
// the witness policy.
func (g *GRPCLog) Checkpoint(ctx context.Context) (*checkpoint.Signed, error) {
	r, err := g.rpc.GetCheckpoint(ctx, &carelogv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("client: gRPC GetCheckpoint: %w", err)
	}
	return g.log.OpenCheckpoint(r.GetCheckpoint())
}

// VerifyInclusion fetches the inclusion proof of a leaf hash in the tree cp
// commits to (a verified checkpoint of this log), checks it, and returns the
// leaf's index.
func (g *GRPCLog) VerifyInclusion(ctx context.Context, leafHash []byte, cp checkpoint.Checkpoint) (uint64, error) {
	r, err := g.rpc.GetInclusionProof(ctx, &carelogv1.GetInclusionProofRequest{LeafHash: leafHash, TreeSize: cp.Size})
	if err != nil {
		return 0, fmt.Errorf("client: gRPC GetInclusionProof: %w", err)
	}
	if r.GetTreeSize() != cp.Size {
		return 0, fmt.Errorf("client: asked for a proof at size %d, got %d", cp.Size, r.GetTreeSize())
	}
	if err := checkpoint.VerifyInclusion(cp, r.GetIndex(), leafHash, r.GetProof()); err != nil {
		return 0, err
	}
	return r.GetIndex(), nil
}

// VerifyConsistency fetches and checks a consistency proof from older to
// newer (both verified checkpoints of this log).
func (g *GRPCLog) VerifyConsistency(ctx context.Context, older, newer checkpoint.Checkpoint) error {
	if newer.Size <= older.Size || older.Size == 0 {
		return checkpoint.VerifyConsistency(older, newer, nil)
	}
	r, err := g.rpc.GetConsistencyProof(ctx, &carelogv1.GetConsistencyProofRequest{OldSize: older.Size, TreeSize: newer.Size})
	if err != nil {
		return fmt.Errorf("client: gRPC GetConsistencyProof: %w", err)
	}
	if r.GetOldSize() != older.Size || r.GetTreeSize() != newer.Size {
		return fmt.Errorf("client: asked for consistency %d→%d, got %d→%d", older.Size, newer.Size, r.GetOldSize(), r.GetTreeSize())
	}
	return checkpoint.VerifyConsistency(older, newer, r.GetProof())
}

// Entries fetches entries [start, end), unverified: check them against a
// checkpoint (e.g. by recomputing the root) before trusting them.
func (g *GRPCLog) Entries(ctx context.Context, start, end uint64) ([]api.Entry, error) {
	r, err := g.rpc.GetEntries(ctx, &carelogv1.GetEntriesRequest{Start: start, End: end})
	if err != nil {
		return nil, fmt.Errorf("client: gRPC GetEntries: %w", err)
	}
	out := make([]api.Entry, len(r.GetEntries()))
	for i, e := range r.GetEntries() {
		if e.GetIndex() != start+uint64(i) {
			return nil, fmt.Errorf("client: entries out of order: position %d has index %d", i, e.GetIndex())
		}
		out[i] = api.Entry{Index: e.GetIndex(), Data: e.GetData()}
	}
	return out, nil
}

// ProofBundle fetches the C2SP tlog-proof bundle for a leaf hash, checks
// that it verifies (Log.OpenBundle) and is for that leaf, and returns it as
// received, ready to be kept for offline verification.
func (g *GRPCLog) ProofBundle(ctx context.Context, leafHash []byte) ([]byte, error) {
	r, err := g.rpc.GetProofBundle(ctx, &carelogv1.GetProofBundleRequest{LeafHash: leafHash})
	if err != nil {
		return nil, fmt.Errorf("client: gRPC GetProofBundle: %w", err)
	}
	b, err := g.log.OpenBundle(r.GetBundle())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(checkpoint.LeafHash(b.Entry), leafHash) {
		return nil, errors.New("client: the log sent a proof bundle for another entry")
	}
	return r.GetBundle(), nil
}
