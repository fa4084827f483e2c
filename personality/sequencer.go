package personality

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
	"github.com/google/trillian"
	"github.com/google/trillian/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// batchSequencer is the high-throughput append path for PREORDERED_LOG
// trees: the log assigns indices itself, in batches, and writes them to
// Trillian with AddSequencedLeaves.
//
// Durability and order (the invariants the crash tests check):
//   - An entry is acknowledged with its index only after the transaction
//     that wrote it to carelog_leaves has committed. Indices are assigned
//     inside that transaction, one batch at a time, so committed indices
//     are always contiguous: there is never a gap.
//   - Each batch transaction locks the lease row and checks holder and
//     epoch, so only the current lease holder can commit indices (fencing).
//   - Trillian is fed from carelog_leaves, from Trillian's own tree size
//     upwards, with up to feedInFlight batches in flight. After a crash the
//     new holder re-sends everything beyond Trillian's tree; leaves Trillian
//     already has are answered as conflicts and skipped. So the state
//     "written to our table, not yet to Trillian" heals on start.
//   - Duplicates are found by identity hash (submitter, event id) in
//     carelog_leaves and within the batch; they get the original's index.
type batchSequencer struct {
	db      *sql.DB
	origin  string
	treeID  int64
	trill   trillian.TrillianLogClient
	logger  *slog.Logger
	metrics *metrics

	holder     string
	batchSize  int
	batchDelay time.Duration
	leaseTTL   time.Duration

	reqs   chan *seqReq
	notify chan struct{} // wakes the feeder after a commit

	leader atomic.Bool
	epoch  atomic.Int64

	// recent maps the leaf hashes of recently sequenced entries to their
	// indices, so that proofs for them need no database query.
	recent recentIndex
}

// recentIndex is a bounded leaf hash → index map, oldest evicted first.
type recentIndex struct {
	mu   sync.RWMutex
	m    map[[32]byte]uint64
	ring [][32]byte
	next int
}

const recentIndexSize = 1 << 18 // ~20 MiB

func (r *recentIndex) add(h []byte, idx uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[[32]byte]uint64, recentIndexSize)
		r.ring = make([][32]byte, recentIndexSize)
	}
	k := [32]byte(h)
	if old := r.ring[r.next]; len(r.m) >= recentIndexSize {
		delete(r.m, old)
	}
	r.ring[r.next] = k
	r.next = (r.next + 1) % recentIndexSize
	r.m[k] = idx
}

func (r *recentIndex) get(h []byte) (uint64, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	idx, ok := r.m[[32]byte(h)]
	return idx, ok
}

const feedInFlight = 2

type seqReq struct {
	e    *entry.Entry
	id   []byte
	done chan seqResult
}

type seqResult struct {
	a   appended
	err error
}

func newBatchSequencer(db *sql.DB, origin string, treeID int64, trill trillian.TrillianLogClient, cfg Config, logger *slog.Logger, m *metrics) *batchSequencer {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &batchSequencer{
		db: db, origin: origin, treeID: treeID, trill: trill, logger: logger, metrics: m,
		holder:     hex.EncodeToString(b),
		batchSize:  cfg.SequencerBatch,
		batchDelay: cfg.BatchDelay,
		leaseTTL:   cfg.LeaseTTL,
		reqs:       make(chan *seqReq, 4*cfg.SequencerBatch),
		notify:     make(chan struct{}, 1),
	}
}

// Append implements appender. On the lease holder it waits for the entry's
// batch to commit and returns its index; elsewhere it queues the entry
// durably for the holder and returns without an index.
func (s *batchSequencer) Append(ctx context.Context, e *entry.Entry) (appended, error) {
	id := entry.IdentityHash(e.Submitter, e.Event.ID)
	if !s.leader.Load() {
		return s.enqueue(ctx, e, id)
	}
	r := &seqReq{e: e, id: id, done: make(chan seqResult, 1)}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return appended{}, ctx.Err()
	}
	t := time.NewTimer(appendTimeout)
	defer t.Stop()
	select {
	case res := <-r.done:
		return res.a, res.err
	case <-ctx.Done():
		// The batch may still commit; a retry is answered as a duplicate.
		return appended{}, ctx.Err()
	case <-t.C:
		// Leadership may have moved while the request waited; a retry
		// reaches the new holder (or the queue) and is answered as a
		// duplicate if this one was stored after all.
		return appended{}, backendErr(errors.New("the sequencer did not answer in time"))
	}
}

// appendTimeout bounds how long a request waits for its batch.
const appendTimeout = 30 * time.Second

// enqueue is the path of a replica without the lease.
func (s *batchSequencer) enqueue(ctx context.Context, e *entry.Entry, id []byte) (appended, error) {
	leafHash := checkpoint.LeafHash(e.Raw)
	if a, err, found := s.lookup(ctx, id, e.Raw); found {
		return a, err
	}
	now := time.Now()
	res, err := s.db.ExecContext(ctx, "INSERT IGNORE INTO carelog_queue (origin, identity_hash, leaf_value, accepted_at) VALUES (?, ?, ?, ?)",
		s.origin, id, e.Raw, now.UnixNano())
	if err != nil {
		return appended{}, backendErr(err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return appended{LeafHash: leafHash, Accepted: now}, nil
	}
	var raw []byte
	var at int64
	err = s.db.QueryRowContext(ctx, "SELECT leaf_value, accepted_at FROM carelog_queue WHERE origin = ? AND identity_hash = ?", s.origin, id).Scan(&raw, &at)
	if errors.Is(err, sql.ErrNoRows) {
		// Sequenced between our two statements.
		if a, err, found := s.lookup(ctx, id, e.Raw); found {
			return a, err
		}
		return appended{}, backendErr(errors.New("entry vanished from the queue"))
	}
	if err != nil {
		return appended{}, backendErr(err)
	}
	if !bytes.Equal(raw, e.Raw) {
		return appended{}, errConflict
	}
	return appended{LeafHash: leafHash, Accepted: time.Unix(0, at), Duplicate: true}, nil
}

// lookup finds an already sequenced entry by identity.
func (s *batchSequencer) lookup(ctx context.Context, id, raw []byte) (appended, error, bool) {
	var idx uint64
	var val []byte
	var at int64
	err := s.db.QueryRowContext(ctx, "SELECT leaf_index, leaf_value, accepted_at FROM carelog_leaves WHERE origin = ? AND identity_hash = ?",
		s.origin, id).Scan(&idx, &val, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return appended{}, nil, false
	}
	if err != nil {
		return appended{}, backendErr(err), true
	}
	if !bytes.Equal(val, raw) {
		return appended{}, errConflict, true
	}
	return appended{LeafHash: checkpoint.LeafHash(raw), Accepted: time.Unix(0, at), Duplicate: true, Index: &idx}, nil, true
}

// indexOf finds the index of a sequenced leaf by its leaf hash.
func (s *batchSequencer) indexOf(ctx context.Context, leafHash []byte, below uint64) (uint64, bool, error) {
	if idx, ok := s.recent.get(leafHash); ok && idx < below {
		return idx, true, nil
	}
	var idx uint64
	err := s.db.QueryRowContext(ctx, "SELECT leaf_index FROM carelog_leaves WHERE origin = ? AND leaf_hash = ? AND leaf_index < ? ORDER BY leaf_index LIMIT 1",
		s.origin, leafHash, below).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, backendErr(err)
	}
	return idx, true, nil
}

// backendErr marks a database failure as "backend unavailable, nothing
// stored" for the API.
func backendErr(err error) error {
	return fmt.Errorf("%w: %v", errBackend, err)
}

var errBackend = &apiError{status: http.StatusServiceUnavailable, msg: "the log's database is unavailable; nothing was stored, try again"}

// run holds or waits for the lease, and while holding it runs the batch
// writer and the Trillian feeder.
func (s *batchSequencer) run(ctx context.Context) {
	for ctx.Err() == nil {
		ok, err := s.acquire(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.Warn("sequencer lease", slog.Any("error", err))
		}
		if !ok {
			s.metrics.sequencerLeader.Set(0)
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.leaseTTL / 3):
			}
			continue
		}
		s.lead(ctx)
	}
}

// acquire takes the lease if it is free or expired.
func (s *batchSequencer) acquire(ctx context.Context) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var holder string
	var epoch, expires int64
	now := time.Now()
	err = tx.QueryRowContext(ctx, "SELECT holder, epoch, expires_at FROM carelog_sequencer_lease WHERE origin = ? FOR UPDATE", s.origin).Scan(&holder, &epoch, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, "INSERT INTO carelog_sequencer_lease (origin, holder, epoch, expires_at) VALUES (?, ?, 1, ?)",
			s.origin, s.holder, now.Add(s.leaseTTL).UnixNano())
		epoch = 1
	case err != nil:
		return false, err
	case holder != s.holder && expires > now.UnixNano():
		return false, nil
	default:
		epoch++
		_, err = tx.ExecContext(ctx, "UPDATE carelog_sequencer_lease SET holder = ?, epoch = ?, expires_at = ? WHERE origin = ?",
			s.holder, epoch, now.Add(s.leaseTTL).UnixNano(), s.origin)
	}
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	s.epoch.Store(epoch)
	s.logger.Info("sequencer lease acquired", slog.Int64("epoch", epoch))
	return true, nil
}

// lead runs the writer, the feeder and lease renewal until the lease is
// lost or ctx ends.
func (s *batchSequencer) lead(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next, err := s.nextIndex(ctx)
	if err != nil {
		s.logger.Warn("sequencer: reading the next index", slog.Any("error", err))
		return
	}
	s.leader.Store(true)
	s.metrics.sequencerLeader.Set(1)
	defer func() {
		s.leader.Store(false)
		s.metrics.sequencerLeader.Set(0)
		s.failPending(errors.New("this replica lost the sequencer lease; nothing was stored, try again"))
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.feed(ctx) }()
	go func() { defer wg.Done(); s.renew(ctx, cancel) }()
	s.write(ctx, next)
	cancel()
	wg.Wait()
}

func (s *batchSequencer) nextIndex(ctx context.Context) (uint64, error) {
	var n sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT MAX(leaf_index) FROM carelog_leaves WHERE origin = ?", s.origin).Scan(&n)
	if err != nil || !n.Valid {
		return 0, err
	}
	return uint64(n.Int64) + 1, nil
}

// renew extends the lease; if it cannot, leadership ends.
func (s *batchSequencer) renew(ctx context.Context, lost context.CancelFunc) {
	t := time.NewTicker(s.leaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.db.ExecContext(ctx, "UPDATE carelog_sequencer_lease SET expires_at = ? WHERE origin = ? AND holder = ? AND epoch = ?",
			time.Now().Add(s.leaseTTL).UnixNano(), s.origin, s.holder, s.epoch.Load())
		if err != nil {
			continue // the writer's own lease check fences us meanwhile
		}
		if n, _ := res.RowsAffected(); n == 0 {
			s.logger.Warn("sequencer lease lost", slog.Int64("epoch", s.epoch.Load()))
			lost()
			return
		}
	}
}

func (s *batchSequencer) failPending(err error) {
	for {
		select {
		case r := <-s.reqs:
			r.done <- seqResult{err: backendErr(err)}
		default:
			return
		}
	}
}

// write collects requests into batches and commits them, until ctx ends.
func (s *batchSequencer) write(ctx context.Context, next uint64) {
	drain := time.NewTicker(100 * time.Millisecond)
	defer drain.Stop()
	for ctx.Err() == nil {
		var batch []*seqReq
		select {
		case <-ctx.Done():
			return
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-drain.C: // queued entries from other replicas
		}
		if len(batch) > 0 {
			deadline := time.NewTimer(s.batchDelay)
		collect:
			for len(batch) < s.batchSize {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
				case <-deadline.C:
					break collect
				case <-ctx.Done():
					break collect
				}
			}
			deadline.Stop()
		}
		n, err := s.commit(ctx, batch, next)
		if err != nil {
			for _, r := range batch {
				r.done <- seqResult{err: err}
			}
			if errors.Is(err, errLeaseLost) {
				s.logger.Warn("sequencer: fenced off, lease lost", slog.Int64("epoch", s.epoch.Load()))
				return
			}
			s.logger.Warn("sequencer: batch not stored", slog.Any("error", err))
			continue
		}
		if n > 0 {
			next += n
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}
}

var errLeaseLost = errors.New("sequencer lease lost")

type newLeaf struct {
	index   uint64
	id      []byte
	raw     []byte
	at      int64
	patient string // pseudonym, "" if none
}

// commit writes one batch (plus queued entries from other replicas) in one
// transaction and answers the batch's requests. It returns how many new
// indices it used.
func (s *batchSequencer) commit(ctx context.Context, batch []*seqReq, next uint64) (uint64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, backendErr(err)
	}
	defer tx.Rollback()
	var holder string
	var epoch int64
	if err := tx.QueryRowContext(ctx, "SELECT holder, epoch FROM carelog_sequencer_lease WHERE origin = ? FOR UPDATE", s.origin).Scan(&holder, &epoch); err != nil {
		return 0, backendErr(err)
	}
	if holder != s.holder || epoch != s.epoch.Load() {
		return 0, backendErr(errLeaseLost)
	}

	type queued struct {
		id, raw []byte
		at      int64
	}
	var qs []queued
	if room := s.batchSize - len(batch); room > 0 {
		rows, err := tx.QueryContext(ctx, "SELECT identity_hash, leaf_value, accepted_at FROM carelog_queue WHERE origin = ? ORDER BY accepted_at LIMIT ?", s.origin, room)
		if err != nil {
			return 0, backendErr(err)
		}
		for rows.Next() {
			var q queued
			if err := rows.Scan(&q.id, &q.raw, &q.at); err != nil {
				rows.Close()
				return 0, backendErr(err)
			}
			qs = append(qs, q)
		}
		rows.Close()
	}
	if len(batch) == 0 && len(qs) == 0 {
		return 0, nil
	}

	// Entries already sequenced.
	ids := make([][]byte, 0, len(batch)+len(qs))
	for _, r := range batch {
		ids = append(ids, r.id)
	}
	for _, q := range qs {
		ids = append(ids, q.id)
	}
	type existing struct {
		index uint64
		raw   []byte
		at    int64
	}
	have := map[string]existing{}
	for chunk := ids; len(chunk) > 0; {
		n := min(len(chunk), 500)
		args := []any{s.origin}
		for _, id := range chunk[:n] {
			args = append(args, id)
		}
		rows, err := tx.QueryContext(ctx, "SELECT identity_hash, leaf_index, leaf_value, accepted_at FROM carelog_leaves WHERE origin = ? AND identity_hash IN ("+
			strings.TrimSuffix(strings.Repeat("?,", n), ",")+")", args...)
		if err != nil {
			return 0, backendErr(err)
		}
		for rows.Next() {
			var id []byte
			var e existing
			if err := rows.Scan(&id, &e.index, &e.raw, &e.at); err != nil {
				rows.Close()
				return 0, backendErr(err)
			}
			have[string(id)] = e
		}
		rows.Close()
		chunk = chunk[n:]
	}

	now := time.Now().UnixNano()
	var fresh []newLeaf
	assign := func(id, raw []byte, at int64, patient string) (existing, bool) {
		if e, ok := have[string(id)]; ok {
			return e, false
		}
		e := existing{index: next + uint64(len(fresh)), raw: raw, at: at}
		have[string(id)] = e
		fresh = append(fresh, newLeaf{index: e.index, id: id, raw: raw, at: at, patient: patient})
		return e, true
	}
	for _, q := range qs {
		patient := ""
		if ev, err := entry.ParseEvent(entry.Text(q.raw)); err == nil { // validated when queued
			patient = ev.Patient
		}
		assign(q.id, q.raw, q.at, patient)
	}
	results := make([]seqResult, len(batch))
	for i, r := range batch {
		e, isNew := assign(r.id, r.e.Raw, now, r.e.Event.Patient)
		idx := e.index
		switch {
		case !bytes.Equal(e.raw, r.e.Raw):
			results[i] = seqResult{err: errConflict}
		default:
			results[i] = seqResult{a: appended{LeafHash: checkpoint.LeafHash(r.e.Raw), Accepted: time.Unix(0, e.at), Duplicate: !isNew, Index: &idx}}
		}
	}

	for chunk := fresh; len(chunk) > 0; {
		n := min(len(chunk), 500)
		args := make([]any, 0, 6*n)
		for _, l := range chunk[:n] {
			args = append(args, s.origin, l.index, l.id, checkpoint.LeafHash(l.raw), l.raw, l.at)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO carelog_leaves (origin, leaf_index, identity_hash, leaf_hash, leaf_value, accepted_at) VALUES "+
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?),", n), ","), args...); err != nil {
			return 0, backendErr(err)
		}
		chunk = chunk[n:]
	}
	if len(qs) > 0 {
		args := []any{s.origin}
		for _, q := range qs {
			args = append(args, q.id)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM carelog_queue WHERE origin = ? AND identity_hash IN ("+
			strings.TrimSuffix(strings.Repeat("?,", len(qs)), ",")+")", args...); err != nil {
			return 0, backendErr(err)
		}
	}
	if len(fresh) > 0 {
		rows := make([]patientRow, 0, len(fresh))
		for _, l := range fresh {
			if l.patient != "" {
				rows = append(rows, patientRow{pseudonym: l.patient, index: l.index})
			}
		}
		// The patient index follows in the same transaction, so the indexer
		// need not read these leaves back; if it is behind (an older tree),
		// it catches up by itself and this is skipped.
		if err := indexInTx(ctx, tx, s.origin, next, next+uint64(len(fresh)), rows); err != nil {
			return 0, backendErr(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, backendErr(err)
	}
	// Durable: now, and only now, answer.
	for i, r := range batch {
		r.done <- results[i]
	}
	for _, l := range fresh {
		s.recent.add(checkpoint.LeafHash(l.raw), l.index)
	}
	s.metrics.batchSize.Observe(float64(len(fresh)))
	s.metrics.sequenced.Set(float64(next + uint64(len(fresh))))
	return uint64(len(fresh)), nil
}

// feed hands committed entries to Trillian in index order, starting at
// Trillian's tree size, with up to feedInFlight batches in flight.
func (s *batchSequencer) feed(ctx context.Context) {
	next, err := s.trillianSize(ctx)
	for err != nil {
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("sequencer: reading Trillian's tree size", slog.Any("error", err))
		time.Sleep(time.Second)
		next, err = s.trillianSize(ctx)
	}
	sem := make(chan struct{}, feedInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		leaves, err := s.load(ctx, next, s.batchSize)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("sequencer: reading committed entries", slog.Any("error", err))
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		if len(leaves) == 0 {
			select {
			case <-ctx.Done():
			case <-s.notify:
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.send(ctx, leaves)
		}()
		next += uint64(len(leaves))
	}
}

func (s *batchSequencer) trillianSize(ctx context.Context) (uint64, error) {
	resp, err := s.trill.GetLatestSignedLogRoot(ctx, &trillian.GetLatestSignedLogRootRequest{LogId: s.treeID})
	if err != nil {
		return 0, err
	}
	var root types.LogRootV1
	if err := root.UnmarshalBinary(resp.GetSignedLogRoot().GetLogRoot()); err != nil {
		return 0, err
	}
	return root.TreeSize, nil
}

func (s *batchSequencer) load(ctx context.Context, from uint64, limit int) ([]*trillian.LogLeaf, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT leaf_index, identity_hash, leaf_value FROM carelog_leaves WHERE origin = ? AND leaf_index >= ? ORDER BY leaf_index LIMIT ?",
		s.origin, from, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*trillian.LogLeaf
	want := from
	for rows.Next() {
		var l trillian.LogLeaf
		var idx uint64
		if err := rows.Scan(&idx, &l.LeafIdentityHash, &l.LeafValue); err != nil {
			return nil, err
		}
		if idx != want {
			// Cannot happen while indices are assigned in one transaction
			// per batch; refuse to feed Trillian a gap rather than stall it.
			return nil, fmt.Errorf("carelog_leaves has a gap at %d (next row %d)", want, idx)
		}
		l.LeafIndex = int64(idx)
		l.LeafIdentityHash = trillianIdentity(idx, l.LeafIdentityHash)
		out = append(out, &l)
		want++
	}
	return out, rows.Err()
}

// committedLeaves reads entries [start, end) from carelog_leaves.
func (s *batchSequencer) committedLeaves(ctx context.Context, start, end uint64) ([]api.Entry, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT leaf_index, leaf_value FROM carelog_leaves WHERE origin = ? AND leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index",
		s.origin, start, end)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Entry
	for rows.Next() {
		var e api.Entry
		if err := rows.Scan(&e.Index, &e.Data); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if uint64(len(out)) != end-start {
		return nil, fmt.Errorf("carelog_leaves holds %d of the entries [%d, %d)", len(out), start, end)
	}
	return out, nil
}

// trillianIdentity is the leaf identity hash given to Trillian: the index,
// big-endian, then the first 24 bytes of the entry's identity hash.
// Trillian keys its LeafData table by it; a key that grows with the index
// keeps Trillian's inserts sequential instead of scattered over the table,
// which is what keeps a large log's writes fast once the table outgrows
// MariaDB's buffer pool. It is deterministic, so a re-send after a crash
// is recognised as the same leaf. Duplicates are carelog's business, found
// in carelog_leaves before an index is assigned.
func trillianIdentity(index uint64, identity []byte) []byte {
	out := make([]byte, 8, 32)
	binary.BigEndian.PutUint64(out, index)
	return append(out, identity[:24]...)
}

// send writes one contiguous batch to Trillian, retrying until it is in.
func (s *batchSequencer) send(ctx context.Context, leaves []*trillian.LogLeaf) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		resp, err := s.trill.AddSequencedLeaves(ctx, &trillian.AddSequencedLeavesRequest{LogId: s.treeID, Leaves: leaves})
		if err == nil {
			bad := 0
			for _, r := range resp.GetResults() {
				switch codes.Code(r.GetStatus().GetCode()) {
				case codes.OK, codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
					// FailedPrecondition: Trillian already has this leaf
					// (a re-send after a restart).
				default:
					bad++
					err = status.ErrorProto(r.GetStatus())
				}
			}
			if bad == 0 {
				s.metrics.fedToTrillian.Add(float64(len(leaves)))
				return
			}
		}
		s.logger.Warn("sequencer: Trillian did not take a batch; retrying", slog.Uint64("first", uint64(leaves[0].LeafIndex)),
			slog.Int("count", len(leaves)), slog.Any("error", err))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
