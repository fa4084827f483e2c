package witness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/carelog/carelog/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

// MaxProofLines is the most consistency proof lines a C2SP tlog-witness
// client may send.
const MaxProofLines = 63

// MaxAddCheckpointBody bounds an add-checkpoint request body. It leaves room
// for 63 proof lines and a checkpoint with well over the 16 signatures
// (post-quantum ones included) a signed-note verifier must accept.
const MaxAddCheckpointBody = 128 << 10

// Errors of add-checkpoint. The HTTP handler maps them to status codes, once.
var (
	// ErrBadRequest: the request body is not old line, proof lines, empty
	// line, checkpoint (400).
	ErrBadRequest = errors.New("malformed add-checkpoint request")
	// ErrUnknownLog: the checkpoint's origin is not a configured log (404).
	ErrUnknownLog = errors.New("unknown log origin")
	// ErrOldTooLarge: the old size is larger than the checkpoint's (400).
	ErrOldTooLarge = errors.New("old size is larger than the checkpoint size")
	// ErrBadProof: the consistency proof does not prove that the checkpoint
	// extends the one the witness holds, or a size-0 checkpoint does not
	// have the empty root (422).
	ErrBadProof = errors.New("checkpoint is not consistent with the latest cosigned checkpoint")
	// ErrFrozen: the witness holds split-view evidence for the log and
	// cosigns nothing for it until an operator clears the evidence (423).
	ErrFrozen = errors.New("split-view evidence is on record for this log; the witness refuses to cosign it until an operator clears the evidence")
)

// ConflictError means the old size in the request is not the size of the
// latest checkpoint the witness cosigned (409). Size is that size.
type ConflictError struct{ Size uint64 }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("old size does not match: the witness holds a checkpoint of size %d", e.Size)
}

// addRequest is a parsed add-checkpoint body.
type addRequest struct {
	old        uint64
	proof      [][]byte
	checkpoint []byte
}

// parseAddRequest parses a C2SP tlog-witness add-checkpoint body: an old
// size line, at most 63 consistency proof lines, an empty line, and the
// checkpoint note. Every line ends in a newline.
func parseAddRequest(body []byte) (*addRequest, error) {
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("%w: no old size line", ErrBadRequest)
	}
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return nil, fmt.Errorf("%w: the first line must be \"old <size>\"", ErrBadRequest)
	}
	old, err := parseSize(string(num))
	if err != nil {
		return nil, fmt.Errorf("%w: old size: %v", ErrBadRequest, err)
	}
	req := &addRequest{old: old}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("%w: no empty line between the proof and the checkpoint", ErrBadRequest)
		}
		if len(line) == 0 {
			break
		}
		if len(req.proof) == MaxProofLines {
			return nil, fmt.Errorf("%w: more than %d consistency proof lines", ErrBadRequest, MaxProofLines)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%w: proof line %d is not a base64 SHA-256 hash", ErrBadRequest, len(req.proof)+1)
		}
		req.proof = append(req.proof, h)
	}
	if len(rest) == 0 {
		return nil, fmt.Errorf("%w: no checkpoint after the empty line", ErrBadRequest)
	}
	req.checkpoint = rest
	return req, nil
}

// parseSize parses a tree size in canonical ASCII decimal: no sign, no
// leading zeroes (except "0" itself).
func parseSize(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return 0, fmt.Errorf("%q is not a decimal size without leading zeroes", s)
	}
	return n, nil
}

// originOf returns the first line of a checkpoint note, its claimed origin.
// It is only used to find the log's key; the origin is then checked
// against the verified note.
func originOf(msg []byte) string {
	line, _, _ := bytes.Cut(msg, []byte("\n"))
	return string(line)
}

// addCheckpoint is the one path by which the witness cosigns a checkpoint:
// the add-checkpoint handler and pull mode both call it. It returns the
// cosignature line ("— <name> <base64>\n") once the cosigned checkpoint is
// stored durably.
func (w *Witness) addCheckpoint(ctx context.Context, old uint64, proof [][]byte, msg []byte) ([]byte, error) {
	origin := originOf(msg)
	lg, ok := w.logs[origin]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownLog, origin)
	}
	cp, err := checkpoint.Open(msg, origin, lg.verifier)
	if err != nil {
		return nil, err
	}
	if cp.Size > math.MaxInt64 {
		return nil, fmt.Errorf("%w: size %d is too large", checkpoint.ErrMalformed, cp.Size)
	}
	if old > cp.Size {
		return nil, fmt.Errorf("%w: old %d, checkpoint %d", ErrOldTooLarge, old, cp.Size)
	}

	var sigLine []byte
	err = w.store.advance(ctx, origin, func(cur *cosigned, frozen bool) (*cosigned, error) {
		// INVARIANT: the witness never cosigns two checkpoints of one log
		// that cannot both be true. It cosigns cp only if cp is consistent
		// with the latest checkpoint it cosigned for the log (cur), and the
		// check, the signature and the write of cp as the new latest
		// happen in this one write transaction, which SQLite serialises
		// against every other writer. Two concurrent requests therefore
		// see each other's result: the second finds the first's size and
		// gets a 409, never a cosignature on a fork of it. The transaction
		// commits (synchronous=FULL, so the checkpoint is on disk) before
		// the cosignature leaves this function; if the commit fails, the
		// cosignature is thrown away.
		if frozen {
			return nil, ErrFrozen
		}
		held := checkpoint.Checkpoint{Origin: origin, Size: 0, Hash: checkpoint.EmptyRoot()}
		if cur != nil {
			held = checkpoint.Checkpoint{Origin: origin, Size: cur.Size, Hash: cur.Root}
		}
		if old != held.Size {
			return nil, &ConflictError{Size: held.Size}
		}
		if cp.Size == 0 && !bytes.Equal(cp.Hash, checkpoint.EmptyRoot()) {
			return nil, fmt.Errorf("%w: a checkpoint of size 0 must have the empty tree's root", ErrBadProof)
		}
		if old == 0 && len(proof) > 0 {
			return nil, fmt.Errorf("%w: the proof must be empty when the old size is 0", ErrBadProof)
		}
		if err := checkpoint.VerifyConsistency(held, cp.Checkpoint, proof); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadProof, err)
		}
		// The cosignature covers the whole note text, extension lines
		// included (C2SP tlog-cosignature). The stored note keeps the
		// log's verified signatures and adds ours, for the monitoring
		// endpoint.
		signed, err := note.Sign(&note.Note{Text: cp.Opened.Text, Sigs: cp.Opened.Sigs}, w.signer)
		if err != nil {
			return nil, fmt.Errorf("witness: cosign: %w", err)
		}
		sigLine = lastLine(signed)
		return &cosigned{Size: cp.Size, Root: cp.Hash, Note: signed}, nil
	})
	if errors.Is(err, ErrFrozen) {
		w.metrics.frozen.WithLabelValues(origin).Set(1)
	}
	if err != nil {
		return nil, err
	}
	w.metrics.frozen.WithLabelValues(origin).Set(0)
	w.metrics.cosignatures.WithLabelValues(origin).Inc()
	w.metrics.size.WithLabelValues(origin).Set(float64(cp.Size))
	return sigLine, nil
}

// lastLine returns the last newline-terminated line of b.
func lastLine(b []byte) []byte {
	i := bytes.LastIndexByte(b[:len(b)-1], '\n')
	return bytes.Clone(b[i+1:])
}
