package fakelog

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"sync"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Witness is a stand-in for a C2SP tlog-witness's monitoring side: it holds,
// per origin, the latest checkpoint it cosigned and serves it at
// GET /<hex sha256(origin)>/checkpoint with a cosignature/v1 line added. It
// checks nothing: a test decides what it has "cosigned", including one
// branch of a forked log.
type Witness struct {
	signer note.Signer
	vkey   string

	mu     sync.Mutex
	latest map[string][]byte // OriginID -> cosigned note
}

// NewWitness makes a witness with a fresh Ed25519 cosignature/v1 key.
func NewWitness(name string) (*Witness, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, fmt.Errorf("fakelog: %w", err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, fmt.Errorf("fakelog: %w", err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return nil, fmt.Errorf("fakelog: %w", err)
	}
	return &Witness{signer: s, vkey: cvkey, latest: map[string][]byte{}}, nil
}

// Name is the witness's key name.
func (w *Witness) Name() string { return w.signer.Name() }

// VKey is the witness's cosignature/v1 verifier key (type 0x04), as policy
// files and monitor configs name it.
func (w *Witness) VKey() string { return w.vkey }

// Signer is the witness's cosignature/v1 signer; pass it to Log.AddCosigner
// to have a log's checkpoints carry this witness's cosignature.
func (w *Witness) Signer() note.Signer { return w.signer }

// Cosign returns msg (a signed checkpoint note) with this witness's
// cosignature added, without checking anything.
func (w *Witness) Cosign(msg []byte) ([]byte, error) { return cosign(msg, w.signer) }

// Set cosigns msg and serves it as the latest checkpoint for origin.
func (w *Witness) Set(origin string, msg []byte) error {
	n, err := w.Cosign(msg)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.latest[checkpoint.OriginID(origin)] = n
	return nil
}

// Handler serves GET /<hex sha256(origin)>/checkpoint: 200 with the
// cosigned note, 404 for an origin it holds nothing for.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{id}/checkpoint", func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		n, ok := w.latest[r.PathValue("id")]
		w.mu.Unlock()
		if !ok {
			api.WriteError(rw, http.StatusNotFound, "unknown log")
			return
		}
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write(n)
	})
	return mux
}

// cosign appends s's signature over the text of the signed note msg. The
// existing signature lines are kept as they are.
func cosign(msg []byte, s note.Signer) ([]byte, error) {
	return checkpoint.Cosign(msg, s)
}

func ed25519Public(seed []byte) ed25519.PublicKey {
	return ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
}
