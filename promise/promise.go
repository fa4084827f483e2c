// Package promise is the log's signed promise to include an accepted entry:
// a signed note by the log key whose text is
//
//	carelog/promise/v1
//	<log origin>
//	<base64 RFC 6962 leaf hash>
//	<acceptance time, RFC 3339 UTC with nanoseconds>
//
// It commits the log to include the entry within its maximum merge delay.
// Submitters keep promises; monitors audit them: a promise whose leaf is not
// in the log by acceptance time plus the merge delay is a broken promise,
// and the signed note proves it was made.
//
// The first line can never be a checkpoint's origin line followed by a
// decimal size, so a promise cannot be mistaken for a checkpoint.
package promise

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

const header = "carelog/promise/v1"

// ErrMalformed means a promise note's text is not a promise.
var ErrMalformed = errors.New("promise: malformed")

// Promise is the content of a promise note.
type Promise struct {
	Origin   string
	LeafHash []byte
	Accepted time.Time
}

func (p Promise) text() string {
	return fmt.Sprintf("%s\n%s\n%s\n%s\n", header, p.Origin, base64.StdEncoding.EncodeToString(p.LeafHash),
		p.Accepted.UTC().Format(time.RFC3339Nano))
}

// Sign makes the promise note. The signer is the log's key, named after the
// origin. Ed25519 signatures are deterministic, so the same promise signed
// again yields the same bytes: a duplicate submission gets the original's
// promise back.
func Sign(p Promise, logSigner note.Signer) (string, error) {
	if logSigner.Name() != p.Origin {
		return "", fmt.Errorf("promise: signer %q is not the log %q", logSigner.Name(), p.Origin)
	}
	if len(p.LeafHash) != sha256.Size {
		return "", fmt.Errorf("promise: leaf hash has %d bytes", len(p.LeafHash))
	}
	b, err := note.Sign(&note.Note{Text: p.text()}, logSigner)
	return string(b), err
}

// Open verifies a promise note with the log's verifier and parses it.
func Open(msg []byte, origin string, logVerifier note.Verifier) (*Promise, error) {
	n, err := note.Open(msg, note.VerifierList(logVerifier))
	if err != nil {
		return nil, fmt.Errorf("promise: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) != 4 || lines[0] != header {
		return nil, ErrMalformed
	}
	if lines[1] != origin {
		return nil, fmt.Errorf("promise: made by log %q, want %q", lines[1], origin)
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != sha256.Size {
		return nil, fmt.Errorf("%w: leaf hash", ErrMalformed)
	}
	t, err := time.Parse(time.RFC3339Nano, lines[3])
	if err != nil {
		return nil, fmt.Errorf("%w: time", ErrMalformed)
	}
	return &Promise{Origin: lines[1], LeafHash: h, Accepted: t}, nil
}
