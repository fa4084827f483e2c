package client

import (
	"errors"
	"fmt"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/promise"
	"github.com/transparency-dev/formats/proof"
	"golang.org/x/mod/sumdb/note"
)

// Bundle is a verified C2SP tlog-proof bundle: carelog puts the entry (the
// signed note as stored) in the bundle's extra data, so one file proves an
// access event with no network.
type Bundle struct {
	Entry      []byte
	Index      uint64
	Checkpoint *checkpoint.Signed
}

// ErrBundleNoEntry means a tlog-proof bundle has no extra data to verify.
var ErrBundleNoEntry = errors.New("proof bundle: no entry in the extra data")

// OpenBundle verifies a tlog-proof bundle offline: the checkpoint's log
// signature and the witness policy (required; checkpoint.NoWitnesses()
// checks the log's signature only), and the
// inclusion of the entry carried in the bundle at the stated index.
func OpenBundle(b []byte, origin string, logVerifier note.Verifier, policy *checkpoint.Policy) (*Bundle, error) {
	var p proof.TLogProof
	if err := p.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	if len(p.ExtraData) == 0 {
		return nil, ErrBundleNoEntry
	}
	if policy == nil {
		return nil, errors.New("proof bundle: a witness policy is required (checkpoint.NoWitnesses() checks the log's signature only)")
	}
	cp, err := checkpoint.OpenWithPolicy(p.Checkpoint, origin, logVerifier, policy)
	if err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	hashes := make([][]byte, len(p.Hashes))
	for i := range p.Hashes {
		hashes[i] = p.Hashes[i][:]
	}
	if err := checkpoint.VerifyInclusion(cp.Checkpoint, p.Index, checkpoint.LeafHash(p.ExtraData), hashes); err != nil {
		return nil, fmt.Errorf("proof bundle: %w", err)
	}
	return &Bundle{Entry: p.ExtraData, Index: p.Index, Checkpoint: cp}, nil
}

// OpenBundle verifies a bundle from this log with its key and policy.
func (l *Log) OpenBundle(b []byte) (*Bundle, error) {
	return OpenBundle(b, l.origin, l.verifier, l.policy)
}

func (l *Log) verifyPromise(msg string, leafHash []byte) error {
	p, err := promise.Open([]byte(msg), l.origin, l.verifier)
	if err != nil {
		return fmt.Errorf("client: the log's promise does not verify: %w", err)
	}
	if string(p.LeafHash) != string(leafHash) {
		return errors.New("client: the log's promise is for another entry")
	}
	return nil
}
