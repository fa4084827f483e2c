// Package fakelog is an in-memory C2SP transparency log for tests.
//
// A Log serves carelog's read API (DESIGN.md section 5: GET /checkpoint,
// /proof/consistency, /proof/inclusion and /entries, in the JSON shapes of
// package api) from an RFC 6962 Merkle tree built with
// github.com/transparency-dev/merkle, and signs C2SP checkpoints with an
// Ed25519 note key named after its origin. Witnesses added with AddCosigner
// cosign every checkpoint it publishes.
//
// Unlike a real log it misbehaves on request, so that tests can prove a
// monitor, witness or client notices:
//
//   - Fork returns a second log with the same key and the same history so far;
//     appending to each makes two diverging branches (a split view).
//   - Rewrite changes the bytes served for one entry without touching the tree,
//     as an edit of the leaf value in the log's database would.
//   - Rollback serves a freshly signed checkpoint of an earlier tree size, and
//     Serve serves any note at all (an old one, a forged one).
//   - Accept hands out a signed promise for an entry and queues it; Drop takes
//     a queued entry away again, so Integrate never adds it: a broken promise.
//   - SetUnavailable makes every request fail with 503.
//
// Nothing is published until Publish (or Integrate, which publishes): a test
// decides exactly which checkpoints exist.
package fakelog

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/promise"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Log is an in-memory C2SP log. Its methods are safe for concurrent use.
type Log struct {
	origin string
	signer note.Signer
	vkey   string

	mu          sync.Mutex
	tree        *tree
	data        [][]byte          // bytes served by /entries; Rewrite changes them
	index       map[string]uint64 // leaf hash -> first index, from the tree
	served      []byte            // the note served at /checkpoint
	cosigners   []note.Signer
	queue       []queued
	unavailable bool
	now         func() time.Time
}

type queued struct {
	data     []byte
	leafHash []byte
}

// New makes an empty log with a fresh Ed25519 key named origin.
func New(origin string) (*Log, error) {
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, fmt.Errorf("fakelog: %w", err)
	}
	return NewWithKey(skey)
}

// NewWithKey makes an empty log that signs with the given private note key;
// the key's name is the origin.
func NewWithKey(skey string) (*Log, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("fakelog: %w", err)
	}
	vkey, err := verifierKey(skey)
	if err != nil {
		return nil, err
	}
	return &Log{
		origin: s.Name(),
		signer: s,
		vkey:   vkey,
		tree:   &tree{},
		index:  map[string]uint64{},
		now:    time.Now,
	}, nil
}

// verifierKey derives the vkey of an Ed25519 note skey.
func verifierKey(skey string) (string, error) {
	// PRIVATE+KEY+name+hash+base64(0x01 || seed)
	f := bytes.SplitN([]byte(skey), []byte("+"), 5)
	if len(f) != 5 {
		return "", errors.New("fakelog: malformed private key")
	}
	k, err := base64.StdEncoding.DecodeString(string(f[4]))
	if err != nil || len(k) != 33 || k[0] != 1 {
		return "", errors.New("fakelog: want an Ed25519 private note key")
	}
	return note.NewEd25519VerifierKey(string(f[2]), ed25519Public(k[1:]))
}

// Origin is the log's origin line, also its key name.
func (l *Log) Origin() string { return l.origin }

// VKey is the log's note verifier key.
func (l *Log) VKey() string { return l.vkey }

// Signer is the log's checkpoint signer, for tests that forge notes with it.
func (l *Log) Signer() note.Signer { return l.signer }

// SetClock sets the clock used for promise acceptance times.
func (l *Log) SetClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}

// AddCosigner makes every checkpoint signed from now on carry a signature by
// s as well, typically a witness's cosignature/v1 signer (see Witness.Signer).
func (l *Log) AddCosigner(s note.Signer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cosigners = append(l.cosigners, s)
}

// Append adds entries to the tree and returns the index of the first. It
// does not publish a checkpoint.
func (l *Log) Append(entries ...[]byte) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.tree.size()
	for _, e := range entries {
		l.appendLocked(e)
	}
	return first
}

func (l *Log) appendLocked(e []byte) {
	h := rfc6962.DefaultHasher.HashLeaf(e)
	if _, ok := l.index[string(h)]; !ok {
		l.index[string(h)] = l.tree.size()
	}
	l.tree.append(h)
	l.data = append(l.data, bytes.Clone(e))
}

// Size is the number of entries in the tree (published or not).
func (l *Log) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tree.size()
}

// Root is the RFC 6962 root of the first size entries of the tree.
func (l *Log) Root(size uint64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if size > l.tree.size() {
		return nil, fmt.Errorf("fakelog: size %d beyond tree size %d", size, l.tree.size())
	}
	return l.tree.root(size), nil
}

// Entry returns the bytes /entries serves at index i.
func (l *Log) Entry(i uint64) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.data[i])
}

// Publish signs (and cosigns) a checkpoint of the whole tree and serves it at
// /checkpoint. It returns the note.
func (l *Log) Publish() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.signLocked(l.tree.size())
	if err != nil {
		return nil, err
	}
	l.served = n
	return n, nil
}

// SignAt signs (and cosigns) a checkpoint of the first size entries without
// serving it.
func (l *Log) SignAt(size uint64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.signLocked(size)
}

func (l *Log) signLocked(size uint64) ([]byte, error) {
	if size > l.tree.size() {
		return nil, fmt.Errorf("fakelog: size %d beyond tree size %d", size, l.tree.size())
	}
	cp := checkpoint.Checkpoint{Origin: l.origin, Size: size, Hash: l.tree.root(size)}
	n, err := checkpoint.Sign(cp, l.signer)
	if err != nil {
		return nil, err
	}
	for _, c := range l.cosigners {
		if n, err = cosign(n, c); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Checkpoint returns the note currently served at /checkpoint (nil before
// the first Publish).
func (l *Log) Checkpoint() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.served)
}

// Serve makes /checkpoint serve msg as is: an old checkpoint (a rollback), or
// anything a test wants to forge.
func (l *Log) Serve(msg []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.served = bytes.Clone(msg)
}

// Rollback serves a freshly signed checkpoint of the first size entries, as
// a log that lost its latest state (or lies about it) would.
func (l *Log) Rollback(size uint64) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, err := l.signLocked(size)
	if err != nil {
		return nil, err
	}
	l.served = n
	return n, nil
}

// Fork returns an independent copy of the log with the same key, entries,
// queue and served checkpoint. Appending to the two afterwards makes two
// diverging trees, both signed by the same key.
func (l *Log) Fork() *Log {
	return l.ForkAt(l.Size())
}

// ForkAt is Fork with only the first size entries kept in the copy; the copy
// serves no checkpoint until it publishes one.
func (l *Log) ForkAt(size uint64) *Log {
	l.mu.Lock()
	defer l.mu.Unlock()
	if size > l.tree.size() {
		size = l.tree.size()
	}
	f := &Log{
		origin:    l.origin,
		signer:    l.signer,
		vkey:      l.vkey,
		tree:      l.tree.prefix(size),
		index:     map[string]uint64{},
		cosigners: append([]note.Signer(nil), l.cosigners...),
		now:       l.now,
	}
	for i := uint64(0); i < size; i++ {
		f.data = append(f.data, bytes.Clone(l.data[i]))
		h := f.tree.leaf(i)
		if _, ok := f.index[string(h)]; !ok {
			f.index[string(h)] = i
		}
	}
	if size == l.tree.size() {
		f.served = bytes.Clone(l.served)
		f.queue = append([]queued(nil), l.queue...)
	}
	return f
}

// Rewrite replaces the bytes /entries serves at index i with data, leaving
// the tree (and so every root, proof and signed checkpoint) unchanged: what
// an insider editing a leaf value in the database behind the log's back does.
func (l *Log) Rewrite(i uint64, data []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.data[i] = bytes.Clone(data)
}

// Accept queues an entry for integration and returns the log's signed
// promise for it (package promise) and its leaf hash. The acceptance time
// comes from the clock set with SetClock.
func (l *Log) Accept(data []byte) (promiseNote string, leafHash []byte, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := rfc6962.DefaultHasher.HashLeaf(data)
	p, err := promise.Sign(promise.Promise{Origin: l.origin, LeafHash: h, Accepted: l.now()}, l.signer)
	if err != nil {
		return "", nil, err
	}
	l.queue = append(l.queue, queued{data: bytes.Clone(data), leafHash: h})
	return p, h, nil
}

// Drop removes a queued entry by leaf hash so Integrate never adds it. It
// reports whether the entry was queued.
func (l *Log) Drop(leafHash []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, q := range l.queue {
		if bytes.Equal(q.leafHash, leafHash) {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			return true
		}
	}
	return false
}

// Integrate appends every queued entry, publishes a checkpoint and returns
// it.
func (l *Log) Integrate() ([]byte, error) {
	l.mu.Lock()
	for _, q := range l.queue {
		l.appendLocked(q.data)
	}
	l.queue = nil
	l.mu.Unlock()
	return l.Publish()
}

// SetUnavailable makes every request answer 503 (true) or work again.
func (l *Log) SetUnavailable(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unavailable = down
}

// Handler serves the log's read API at the root of the returned handler.
func (l *Log) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathCheckpoint, l.handleCheckpoint)
	mux.HandleFunc("GET "+api.PathConsistencyProof, l.handleConsistency)
	mux.HandleFunc("GET "+api.PathInclusionProof, l.handleInclusion)
	mux.HandleFunc("GET "+api.PathEntries, l.handleEntries)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		down := l.unavailable
		l.mu.Unlock()
		if down {
			api.WriteError(w, http.StatusServiceUnavailable, "fakelog: unavailable")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (l *Log) handleCheckpoint(w http.ResponseWriter, r *http.Request) {
	n := l.Checkpoint()
	if n == nil {
		api.WriteError(w, http.StatusNotFound, "no checkpoint yet")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(n)
}

func uintParam(r *http.Request, name string) (uint64, error) {
	v, err := strconv.ParseUint(r.URL.Query().Get(name), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parameter %q must be a decimal number", name)
	}
	return v, nil
}

func (l *Log) handleConsistency(w http.ResponseWriter, r *http.Request) {
	old, err := uintParam(r, "old")
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	size, err := uintParam(r, "size")
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if old > size || size > l.tree.size() {
		api.WriteError(w, http.StatusBadRequest, fmt.Sprintf("need old <= size <= %d", l.tree.size()))
		return
	}
	nodes, err := proof.Consistency(old, size)
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := l.tree.proof(nodes)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, api.ConsistencyProof{Old: old, Size: size, Proof: p})
}

func (l *Log) handleInclusion(w http.ResponseWriter, r *http.Request) {
	h, err := base64.URLEncoding.DecodeString(r.URL.Query().Get("hash"))
	if err != nil || len(h) != 32 {
		api.WriteError(w, http.StatusBadRequest, `parameter "hash" must be a base64url SHA-256 leaf hash`)
		return
	}
	size, err := uintParam(r, "size")
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if size > l.tree.size() {
		api.WriteError(w, http.StatusBadRequest, fmt.Sprintf("size beyond tree size %d", l.tree.size()))
		return
	}
	idx, ok := l.index[string(h)]
	if !ok || idx >= size {
		api.WriteError(w, http.StatusNotFound, "leaf hash not in the tree of that size")
		return
	}
	nodes, err := proof.Inclusion(idx, size)
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	p, err := l.tree.proof(nodes)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, api.InclusionProof{Index: idx, Size: size, Proof: p})
}

func (l *Log) handleEntries(w http.ResponseWriter, r *http.Request) {
	start, err := uintParam(r, "start")
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	end, err := uintParam(r, "end")
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if end <= start || end-start > api.MaxEntriesPerRequest {
		api.WriteError(w, http.StatusBadRequest, fmt.Sprintf("need start < end <= start+%d", api.MaxEntriesPerRequest))
		return
	}
	l.mu.Lock()
	if end > uint64(len(l.data)) {
		end = uint64(len(l.data))
	}
	out := api.Entries{Entries: []api.Entry{}}
	for i := start; i < end; i++ {
		// Rewrite replaces l.data[i], never its bytes: safe to encode unlocked.
		out.Entries = append(out.Entries, api.Entry{Index: i, Data: l.data[i]})
	}
	l.mu.Unlock()
	api.WriteJSON(w, http.StatusOK, out)
}

// tree keeps every perfect-subtree hash of an RFC 6962 tree by level:
// hashes[level][i] covers leaves [i<<level, (i+1)<<level). The compact range
// reports each node it completes as entries are appended.
type tree struct {
	rng    *compact.Range
	hashes [][][]byte
}

var factory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

func (t *tree) size() uint64 {
	if t.rng == nil {
		return 0
	}
	return t.rng.End()
}

func (t *tree) leaf(i uint64) []byte { return t.hashes[0][i] }

func (t *tree) append(leafHash []byte) {
	if t.rng == nil {
		t.rng = factory.NewEmptyRange(0)
	}
	// Append only fails for ranges from another factory, never here.
	_ = t.rng.Append(leafHash, func(id compact.NodeID, h []byte) {
		for uint(len(t.hashes)) <= id.Level {
			t.hashes = append(t.hashes, nil)
		}
		t.hashes[id.Level] = append(t.hashes[id.Level], h)
	})
}

func (t *tree) get(ids []compact.NodeID) [][]byte {
	out := make([][]byte, len(ids))
	for i, id := range ids {
		out[i] = t.hashes[id.Level][id.Index]
	}
	return out
}

func (t *tree) root(size uint64) []byte {
	if size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	r, err := factory.NewRange(0, size, t.get(compact.RangeNodes(0, size, nil)))
	if err != nil {
		panic(err) // RangeNodes yields exactly the hashes NewRange wants
	}
	h, err := r.GetRootHash(nil)
	if err != nil {
		panic(err)
	}
	return h
}

func (t *tree) proof(n proof.Nodes) ([][]byte, error) {
	return n.Rehash(t.get(n.IDs), rfc6962.DefaultHasher.HashChildren)
}

// prefix copies the tree of the first size leaves.
func (t *tree) prefix(size uint64) *tree {
	c := &tree{}
	for level := range t.hashes {
		n := size >> uint(level)
		if n == 0 {
			break
		}
		c.hashes = append(c.hashes, append([][]byte(nil), t.hashes[level][:n]...))
	}
	if size > 0 {
		r, err := factory.NewRange(0, size, c.get(compact.RangeNodes(0, size, nil)))
		if err != nil {
			panic(err)
		}
		c.rng = r
	}
	return c
}
