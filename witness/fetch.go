package witness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/carelog/carelog/api"
)

// maxFetchBody bounds what the witness reads from a log or a peer.
const maxFetchBody = 1 << 20

// statusError is a non-200 answer from a log or a peer.
type statusError struct {
	url     string
	status  int
	message string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d: %s", e.url, e.status, e.message)
}

func isNotFound(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.status == http.StatusNotFound
}

// proofRefusedError is a log's definite refusal (a 4xx other than 408 and
// 429) to serve a consistency proof between two checkpoints it signed.
type proofRefusedError struct{ *statusError }

// get fetches url and returns the body of a 200 answer, or a *statusError.
func (w *Witness) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := w.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if len(body) > maxFetchBody {
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", url, maxFetchBody)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{url: url, status: resp.StatusCode, message: errorMessage(body)}
	}
	return body, nil
}

// errorMessage extracts a short message from an error body.
func errorMessage(body []byte) string {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// fetchLogCheckpoint fetches the log's latest checkpoint note.
func (w *Witness) fetchLogCheckpoint(ctx context.Context, lg *logState) ([]byte, error) {
	return w.get(ctx, lg.url+api.PathCheckpoint)
}

// fetchProof fetches an RFC 6962 consistency proof from the log between
// tree sizes old and size. A *proofRefusedError means the log refused.
func (w *Witness) fetchProof(ctx context.Context, lg *logState, old, size uint64) ([][]byte, error) {
	url := lg.url + api.PathConsistencyProof + "?old=" + strconv.FormatUint(old, 10) + "&size=" + strconv.FormatUint(size, 10)
	b, err := w.get(ctx, url)
	var se *statusError
	if errors.As(err, &se) && se.status/100 == 4 && se.status != http.StatusRequestTimeout && se.status != http.StatusTooManyRequests {
		return nil, &proofRefusedError{se}
	}
	if err != nil {
		return nil, err
	}
	var p api.ConsistencyProof
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if p.Old != old || p.Size != size {
		return nil, fmt.Errorf("GET %s: the log answered with a proof from %d to %d", url, p.Old, p.Size)
	}
	return p.Proof, nil
}
