package integration

import (
	"bytes"
	"fmt"

	"github.com/carelog/carelog/checkpoint"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// verifyRootOf recomputes the RFC 6962 root of leaves, independently of the
// log, and compares it with the checkpoint.
func verifyRootOf(leaves [][]byte, cp checkpoint.Checkpoint) error {
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, l := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(l), nil); err != nil {
			return err
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return err
	}
	if len(leaves) == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	}
	if !bytes.Equal(root, cp.Hash) {
		return fmt.Errorf("the root of the %d leaves served is not the signed root", len(leaves))
	}
	return nil
}
