// Package cosign collects witness cosignatures for a log's checkpoint. It is
// a client of C2SP tlog-witness (POST <prefix>/add-checkpoint) and works with
// any witness that speaks it, not only carelog's.
//
// The log calls Push after signing a checkpoint, then attaches the returned
// signature lines with checkpoint.AddSignatures and checks its witness
// policy. Push never fails as a whole because a witness is down: every
// witness gets its own Result.
package cosign

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"golang.org/x/mod/sumdb/note"
)

// DefaultTimeout bounds the exchange with one witness when Client.Timeout
// is zero.
const DefaultTimeout = 10 * time.Second

// maxResponse bounds what Push reads from a witness.
const maxResponse = 64 << 10

// ConsistencyProofFunc returns the RFC 6962 consistency proof of the log
// from tree size old to tree size size (0 < old < size).
type ConsistencyProofFunc func(ctx context.Context, old, size uint64) ([][]byte, error)

// Client pushes checkpoints to witnesses. The zero value is ready to use.
type Client struct {
	// HTTPClient sends the requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds the whole exchange with one witness, the retry after a
	// 409 included. Zero means DefaultTimeout.
	Timeout time.Duration
}

// Result is what one witness answered.
type Result struct {
	Witness checkpoint.Witness
	// Signatures are the witness's cosignature lines ("— <name> <base64>\n")
	// on the checkpoint, each verified with Witness.Verifier. Lines from
	// other keys are dropped. Empty if Err is set.
	Signatures [][]byte
	// Size is the tree size the witness is now known to hold: the
	// checkpoint's size after a cosignature, the size the witness reported
	// in a 409, and otherwise the size Push was told it holds. Pass it to
	// the next Push.
	Size uint64
	// Err says why there is no cosignature: a *StatusError, ErrNoCosignature,
	// a proof or transport error, or the context's error.
	Err error
}

// StatusError is a witness's answer other than 200 (after the one retry a
// 409 gets).
type StatusError struct {
	StatusCode int
	// Body is the start of the answer, for the log.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("witness answered HTTP %d: %s", e.StatusCode, e.Body)
}

// ErrNoCosignature means a witness answered 200 without any valid
// cosignature from its key on the checkpoint.
var ErrNoCosignature = errors.New("cosign: no valid cosignature from the witness's key")

// Push sends the log-signed checkpoint note signedCheckpoint to every
// witness in parallel. held gives the size each witness (by Witness.Name) is
// believed to hold; a missing entry means 0. For each witness Push sends
// "old <held>" with a consistency proof from proof; on a 409 it reads the
// witness's size from the answer, fetches a proof from that size and tries
// once more. It returns one Result per witness, in the order of witnesses.
// The error is only for a checkpoint that cannot be parsed.
func (c *Client) Push(ctx context.Context, signedCheckpoint []byte, witnesses []checkpoint.Witness, held map[string]uint64, proof ConsistencyProofFunc) ([]Result, error) {
	textB, err := checkpoint.NoteText(signedCheckpoint)
	if err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	text := string(textB)
	cp, err := checkpoint.ParseBody(textB)
	if err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	results := make([]Result, len(witnesses))
	var wg sync.WaitGroup
	for i, w := range witnesses {
		wg.Go(func() {
			results[i] = c.pushOne(ctx, w, signedCheckpoint, text, cp.Size, held[w.Name], proof)
		})
	}
	wg.Wait()
	return results, nil
}

// Signatures returns the signature lines of all results, to pass to
// checkpoint.AddSignatures.
func Signatures(results []Result) [][]byte {
	var all [][]byte
	for _, r := range results {
		all = append(all, r.Signatures...)
	}
	return all
}

func (c *Client) pushOne(ctx context.Context, w checkpoint.Witness, msg []byte, text string, size, held uint64, proof ConsistencyProofFunc) Result {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	res := Result{Witness: w, Size: held}
	old := held
	if old > size {
		// Our belief cannot be right for this checkpoint; old 0 asks the
		// witness for its size (C2SP tlog-witness allows that).
		old = 0
	}
	for attempt := 0; ; attempt++ {
		sigs, err := c.add(ctx, w, msg, text, old, size, proof)
		var conflict *conflictError
		switch {
		case err == nil:
			res.Signatures, res.Size = sigs, size
			return res
		case errors.As(err, &conflict):
			res.Size = conflict.size
			if attempt == 0 && conflict.size <= size {
				old = conflict.size
				continue
			}
			res.Err = &StatusError{StatusCode: http.StatusConflict, Body: fmt.Sprintf("the witness holds size %d", conflict.size)}
			return res
		default:
			res.Err = err
			return res
		}
	}
}

// conflictError is a 409 with the witness's size.
type conflictError struct{ size uint64 }

func (e *conflictError) Error() string { return fmt.Sprintf("witness holds size %d", e.size) }

// add makes one add-checkpoint request.
func (c *Client) add(ctx context.Context, w checkpoint.Witness, msg []byte, text string, old, size uint64, proof ConsistencyProofFunc) ([][]byte, error) {
	var hashes [][]byte
	if old > 0 && old < size {
		if proof == nil {
			return nil, fmt.Errorf("cosign: the witness holds size %d and no consistency proof function was given", old)
		}
		var err error
		if hashes, err = proof(ctx, old, size); err != nil {
			return nil, fmt.Errorf("cosign: consistency proof from %d to %d: %w", old, size, err)
		}
	}
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	for _, h := range hashes {
		body.WriteString(base64.StdEncoding.EncodeToString(h))
		body.WriteByte('\n')
	}
	body.WriteByte('\n')
	body.Write(msg)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.AddCheckpointURL, &body)
	if err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("cosign: reading the answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		sigs := verifiedLines(w.Verifier, text, answer)
		if len(sigs) == 0 {
			return nil, ErrNoCosignature
		}
		return sigs, nil
	case http.StatusConflict:
		// C2SP tlog-witness: the body is the witness's size and a newline,
		// with Content-Type text/x.tlog.size.
		line, ok := strings.CutSuffix(string(answer), "\n")
		n, err := strconv.ParseUint(line, 10, 64)
		if !ok || err != nil || strconv.FormatUint(n, 10) != line {
			return nil, &StatusError{StatusCode: resp.StatusCode, Body: snippet(answer)}
		}
		return nil, &conflictError{size: n}
	default:
		return nil, &StatusError{StatusCode: resp.StatusCode, Body: snippet(answer)}
	}
}

// verifiedLines returns the signature lines of answer that are valid
// signatures of v on the note text. Lines from other keys are ignored, as
// C2SP tlog-witness requires; so are lines that do not verify.
func verifiedLines(v note.Verifier, text string, answer []byte) [][]byte {
	var out [][]byte
	for len(answer) > 0 {
		line, rest, ok := bytes.Cut(answer, []byte("\n"))
		answer = rest
		if !ok || !bytes.HasPrefix(line, []byte("— ")) {
			continue
		}
		// Check each line on its own, as the one signature of a note.
		msg := []byte(text + "\n" + string(line) + "\n")
		if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
			continue
		}
		out = append(out, append(bytes.Clone(line), '\n'))
	}
	return out
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
