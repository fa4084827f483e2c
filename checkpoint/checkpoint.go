// Package checkpoint holds the one copy of carelog's checkpoint logic: signing
// C2SP tlog-checkpoint notes, opening them with a log's verifier key, checking
// consistency between two checkpoints, and checking witness cosignatures
// against a policy. The log, the witnesses, the monitor and the SDK all import
// it; none of them parses a checkpoint on its own.
//
// A checkpoint body is exactly three lines (C2SP tlog-checkpoint):
//
//	<origin>
//	<decimal tree size>
//	<base64 RFC 6962 root hash>
//
// carelog's log never writes extension lines. Opening accepts them (other
// C2SP logs may use them) and reports them in Signed.Extensions.
package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Named errors for malformed or untrustworthy checkpoints. Callers map them to
// status codes once, at their edge.
var (
	ErrMalformed       = errors.New("checkpoint: malformed")
	ErrNoLogSignature  = errors.New("checkpoint: no valid signature from the log's key")
	ErrWrongOrigin     = errors.New("checkpoint: origin does not match the log")
	ErrInconsistent    = errors.New("checkpoint: not consistent with the earlier checkpoint")
	ErrSmaller         = errors.New("checkpoint: smaller than the earlier checkpoint")
	ErrSameSizeNewRoot = errors.New("checkpoint: same size as the earlier checkpoint with a different root")
)

// Checkpoint is the body of a C2SP checkpoint: origin, size and root hash.
type Checkpoint = log.Checkpoint

// Signed is a checkpoint whose log signature has been verified, together with
// the note it came in (which may carry cosignatures too).
type Signed struct {
	Checkpoint
	// Extensions holds any lines after the root hash; empty for carelog's log.
	Extensions []byte
	// Note is the whole signed note text as received or produced.
	Note []byte
	// Opened is the parsed note; Opened.Sigs lists every verified signature
	// (the log's and those of the extra verifiers passed to Open).
	Opened *note.Note
}

// Sign produces the signed note for cp with the log's signer. The signer's
// name must equal the origin: a C2SP checkpoint is signed by a key named
// after the log.
func Sign(cp Checkpoint, signer note.Signer) ([]byte, error) {
	if signer.Name() != cp.Origin {
		return nil, fmt.Errorf("checkpoint: signer name %q differs from origin %q", signer.Name(), cp.Origin)
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("%w: root hash has %d bytes, want %d", ErrMalformed, len(cp.Hash), sha256.Size)
	}
	return note.Sign(&note.Note{Text: string(cp.Marshal())}, signer)
}

// Open verifies the log's signature on a checkpoint note and parses it. Extra
// verifiers (witness cosignature keys) are checked too where their signatures
// are present; signatures by unknown keys are ignored, as C2SP requires.
func Open(msg []byte, origin string, logVerifier note.Verifier, extra ...note.Verifier) (*Signed, error) {
	vs := append([]note.Verifier{logVerifier}, extra...)
	n, err := note.Open(msg, note.VerifierList(vs...))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unverified):
			return nil, ErrNoLogSignature
		case errors.As(err, &invalid):
			return nil, fmt.Errorf("%w: %v", ErrNoLogSignature, err)
		default:
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	signedByLog := false
	for _, s := range n.Sigs {
		if s.Name == logVerifier.Name() && s.Hash == logVerifier.KeyHash() {
			signedByLog = true
		}
	}
	if !signedByLog {
		return nil, ErrNoLogSignature
	}
	var cp Checkpoint
	rest, err := cp.Unmarshal([]byte(n.Text))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(cp.Hash) != sha256.Size {
		return nil, fmt.Errorf("%w: root hash has %d bytes, want %d", ErrMalformed, len(cp.Hash), sha256.Size)
	}
	if cp.Origin != origin {
		return nil, fmt.Errorf("%w: got %q, want %q", ErrWrongOrigin, cp.Origin, origin)
	}
	return &Signed{Checkpoint: cp, Extensions: rest, Note: msg, Opened: n}, nil
}

// ParseBody parses an unsigned checkpoint body (the note text). It is for
// callers that already verified the note, such as stores reading back what
// they wrote; untrusted input goes through Open.
func ParseBody(text []byte) (Checkpoint, error) {
	var cp Checkpoint
	if _, err := cp.Unmarshal(text); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(cp.Hash) != sha256.Size {
		return Checkpoint{}, fmt.Errorf("%w: root hash has %d bytes", ErrMalformed, len(cp.Hash))
	}
	return cp, nil
}

// EmptyRoot is the RFC 6962 root of the empty tree, SHA-256 of nothing.
func EmptyRoot() []byte {
	h := sha256.Sum256(nil)
	return h[:]
}

// VerifyConsistency checks that newer extends older: the tree of older.Size
// entries is a prefix of the tree of newer.Size entries, as proved by the
// RFC 6962 consistency proof p. It returns ErrSmaller, ErrSameSizeNewRoot or
// ErrInconsistent (wrapped) when that cannot be true.
func VerifyConsistency(older, newer Checkpoint, p [][]byte) error {
	if older.Origin != newer.Origin {
		return fmt.Errorf("%w: origins %q and %q differ", ErrInconsistent, older.Origin, newer.Origin)
	}
	switch {
	case older.Size == 0 && !bytes.Equal(older.Hash, EmptyRoot()):
		return fmt.Errorf("%w: a checkpoint of size 0 must have the empty tree's root", ErrInconsistent)
	case newer.Size < older.Size:
		return fmt.Errorf("%w: size %d after %d", ErrSmaller, newer.Size, older.Size)
	case newer.Size == older.Size:
		if !bytes.Equal(newer.Hash, older.Hash) {
			return fmt.Errorf("%w: size %d", ErrSameSizeNewRoot, newer.Size)
		}
		return nil
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, older.Size, newer.Size, p, older.Hash, newer.Hash); err != nil {
		return fmt.Errorf("%w: from size %d to %d: %v", ErrInconsistent, older.Size, newer.Size, err)
	}
	return nil
}

// VerifyInclusion checks that the leaf with the given RFC 6962 leaf hash sits
// at index in the tree that cp commits to.
func VerifyInclusion(cp Checkpoint, index uint64, leafHash []byte, p [][]byte) error {
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, leafHash, p, cp.Hash); err != nil {
		return fmt.Errorf("checkpoint: inclusion of index %d in tree of size %d: %w", index, cp.Size, err)
	}
	return nil
}

// LeafHash is the RFC 6962 leaf hash of a log entry's bytes.
func LeafHash(entry []byte) []byte {
	return rfc6962.DefaultHasher.HashLeaf(entry)
}

// OriginID is the lower-case hex SHA-256 of an origin, the path segment
// C2SP tlog-witness monitoring endpoints use to name a log.
func OriginID(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(h[:])
}
