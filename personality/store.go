package personality

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

//go:embed schema.sql
var ownSchema string

// OwnSchema is the SQL of the personality's own tables (Trillian's are
// Trillian's). Operators who provision by hand apply it as is.
func OwnSchema() string { return ownSchema }

// signedCheckpoint is a checkpoint the log has signed.
type signedCheckpoint struct {
	Size uint64
	Root []byte
	Note []byte
}

// errCheckpointRace means another writer recorded a checkpoint since we read
// the latest one; the caller starts over from the new latest.
var errCheckpointRace = errors.New("another checkpoint was recorded concurrently")

// store is the personality's own durable state.
type store interface {
	// LockSetup serialises the first start of replicas of one log (finding
	// or creating its tree), so that they agree on one tree.
	LockSetup(ctx context.Context, origin string) (unlock func(), err error)
	TreeID(ctx context.Context, origin string) (int64, error)
	SetTreeID(ctx context.Context, origin string, id int64) error
	// LatestCheckpoint returns the latest signed checkpoint, nil if none.
	LatestCheckpoint(ctx context.Context, origin string) (*signedCheckpoint, error)
	// RecordCheckpoint durably records next as the latest signed checkpoint
	// if prev (nil: none) is still the latest; otherwise errCheckpointRace.
	RecordCheckpoint(ctx context.Context, origin string, prev *signedCheckpoint, next signedCheckpoint) error

	// Cosigned returns the latest checkpoint note that met the witness
	// policy, nil if none; RecordCosigned replaces it if size is larger.
	Cosigned(ctx context.Context, origin string) ([]byte, error)
	RecordCosigned(ctx context.Context, origin string, size uint64, note []byte) error

	// IndexPosition is the first leaf the pseudonym index has not read.
	IndexPosition(ctx context.Context, origin string) (uint64, error)
	// AddToIndex records rows for leaves [from, to) and moves the position
	// from from to to, atomically; a stale from is errCheckpointRace.
	AddToIndex(ctx context.Context, origin string, from, to uint64, rows []patientRow) error
	// PatientIndices lists up to limit leaf indices of a pseudonym in
	// [from, below), ascending.
	PatientIndices(ctx context.Context, origin, pseudonym string, from, below uint64, limit int) ([]uint64, error)
}

type mysqlStore struct{ db *sql.DB }

func newMySQLStore(ctx context.Context, db *sql.DB) (*mysqlStore, error) {
	for _, stmt := range sqlStatements(ownSchema) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("creating carelog's tables: %w", err)
		}
	}
	return &mysqlStore{db: db}, nil
}

func (s *mysqlStore) LockSetup(ctx context.Context, origin string) (func(), error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	name := "carelog-setup-" + hex.EncodeToString(sha256Sum(origin))[:32]
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 60)", name).Scan(&got); err != nil || !got.Valid || got.Int64 != 1 {
		conn.Close()
		if err == nil {
			err = errors.New("timed out waiting for another replica's setup")
		}
		return nil, fmt.Errorf("locking the log's setup: %w", err)
	}
	return func() {
		_, _ = conn.ExecContext(context.Background(), "SELECT RELEASE_LOCK(?)", name)
		conn.Close()
	}, nil
}

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func (s *mysqlStore) TreeID(ctx context.Context, origin string) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, "SELECT tree_id FROM carelog_trees WHERE origin = ?", origin).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

func (s *mysqlStore) SetTreeID(ctx context.Context, origin string, id int64) error {
	_, err := s.db.ExecContext(ctx, "INSERT INTO carelog_trees (origin, tree_id) VALUES (?, ?) ON DUPLICATE KEY UPDATE tree_id = VALUES(tree_id)", origin, id)
	return err
}

func (s *mysqlStore) LatestCheckpoint(ctx context.Context, origin string) (*signedCheckpoint, error) {
	var c signedCheckpoint
	err := s.db.QueryRowContext(ctx, `SELECT c.size, c.root, c.note FROM carelog_latest l
		JOIN carelog_checkpoints c ON c.origin = l.origin AND c.size = l.size WHERE l.origin = ?`, origin).Scan(&c.Size, &c.Root, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the latest signed checkpoint: %w", err)
	}
	return &c, nil
}

func (s *mysqlStore) RecordCheckpoint(ctx context.Context, origin string, prev *signedCheckpoint, next signedCheckpoint) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var size uint64
	var root []byte
	err = tx.QueryRowContext(ctx, "SELECT size, root FROM carelog_latest WHERE origin = ? FOR UPDATE", origin).Scan(&size, &root)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if prev != nil {
			return errCheckpointRace
		}
	case err != nil:
		return err
	default:
		if prev == nil || prev.Size != size || !bytes.Equal(prev.Root, root) {
			return errCheckpointRace
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO carelog_checkpoints (origin, size, root, note, signed_at) VALUES (?, ?, ?, ?, ?)",
		origin, next.Size, next.Root, next.Note, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("recording checkpoint %d: %w", next.Size, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO carelog_latest (origin, size, root) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE size = VALUES(size), root = VALUES(root)`, origin, next.Size, next.Root); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *mysqlStore) Cosigned(ctx context.Context, origin string) ([]byte, error) {
	var n []byte
	err := s.db.QueryRowContext(ctx, "SELECT note FROM carelog_cosigned WHERE origin = ?", origin).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return n, err
}

func (s *mysqlStore) RecordCosigned(ctx context.Context, origin string, size uint64, note []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO carelog_cosigned (origin, size, note) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE note = IF(VALUES(size) > size, VALUES(note), note), size = GREATEST(size, VALUES(size))`, origin, size, note)
	return err
}

func (s *mysqlStore) IndexPosition(ctx context.Context, origin string) (uint64, error) {
	var n uint64
	err := s.db.QueryRowContext(ctx, "SELECT next_index FROM carelog_index_state WHERE origin = ?", origin).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

func (s *mysqlStore) AddToIndex(ctx context.Context, origin string, from, to uint64, rows []patientRow) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var cur uint64
	err = tx.QueryRowContext(ctx, "SELECT next_index FROM carelog_index_state WHERE origin = ? FOR UPDATE", origin).Scan(&cur)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if cur != from {
		return errCheckpointRace
	}
	if err := insertIndexRows(ctx, tx, origin, rows); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO carelog_index_state (origin, next_index) VALUES (?, ?)
		ON DUPLICATE KEY UPDATE next_index = VALUES(next_index)`, origin, to); err != nil {
		return err
	}
	return tx.Commit()
}

// indexInTx moves the patient index from from to to and records rows,
// inside the caller's transaction, if the index is exactly at from;
// otherwise it does nothing (the indexer catches up by reading leaves).
func indexInTx(ctx context.Context, tx *sql.Tx, origin string, from, to uint64, rows []patientRow) error {
	res, err := tx.ExecContext(ctx, "UPDATE carelog_index_state SET next_index = ? WHERE origin = ? AND next_index = ?", to, origin, from)
	if err != nil {
		return err
	}
	n, _ := res.RowsAffected()
	if n == 0 && from == 0 {
		if res, err = tx.ExecContext(ctx, "INSERT IGNORE INTO carelog_index_state (origin, next_index) VALUES (?, ?)", origin, to); err != nil {
			return err
		}
		n, _ = res.RowsAffected()
	}
	if n != 1 {
		return nil
	}
	return insertIndexRows(ctx, tx, origin, rows)
}

func insertIndexRows(ctx context.Context, tx *sql.Tx, origin string, rows []patientRow) error {
	for len(rows) > 0 {
		n := min(len(rows), 500)
		q := "INSERT IGNORE INTO carelog_patient_index (origin, pseudonym, leaf_index) VALUES " + strings.TrimSuffix(strings.Repeat("(?,?,?),", n), ",")
		args := make([]any, 0, 3*n)
		for _, r := range rows[:n] {
			args = append(args, origin, r.pseudonym, r.index)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("patient index: %w", err)
		}
		rows = rows[n:]
	}
	return nil
}

func (s *mysqlStore) PatientIndices(ctx context.Context, origin, pseudonym string, from, below uint64, limit int) ([]uint64, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT leaf_index FROM carelog_patient_index
		WHERE origin = ? AND pseudonym = ? AND leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index LIMIT ?`,
		origin, pseudonym, from, below, limit)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []uint64
	for rs.Next() {
		var i uint64
		if err := rs.Scan(&i); err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rs.Err()
}

// memoryStore keeps state in memory: the try-out mode, which keeps nothing.
type memoryStore struct {
	mu     sync.Mutex
	trees  map[string]int64
	latest map[string]*signedCheckpoint
	pos    map[string]uint64
	cosig  map[string]cosignedRecord
	index  map[string][]uint64 // origin + "\n" + pseudonym -> ascending indices
}

func newMemoryStore() *memoryStore {
	return &memoryStore{trees: map[string]int64{}, latest: map[string]*signedCheckpoint{},
		pos: map[string]uint64{}, index: map[string][]uint64{}, cosig: map[string]cosignedRecord{}}
}

type cosignedRecord struct {
	size uint64
	note []byte
}

func (s *memoryStore) Cosigned(_ context.Context, origin string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cosig[origin].note, nil
}

func (s *memoryStore) RecordCosigned(_ context.Context, origin string, size uint64, note []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.cosig[origin]; !ok || size > c.size {
		s.cosig[origin] = cosignedRecord{size: size, note: note}
	}
	return nil
}

func (s *memoryStore) IndexPosition(_ context.Context, origin string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos[origin], nil
}

func (s *memoryStore) AddToIndex(_ context.Context, origin string, from, to uint64, rows []patientRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos[origin] != from {
		return errCheckpointRace
	}
	for _, r := range rows {
		k := origin + "\n" + r.pseudonym
		s.index[k] = append(s.index[k], r.index)
	}
	s.pos[origin] = to
	return nil
}

func (s *memoryStore) PatientIndices(_ context.Context, origin, pseudonym string, from, below uint64, limit int) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, i := range s.index[origin+"\n"+pseudonym] {
		if i >= from && i < below && len(out) < limit {
			out = append(out, i)
		}
	}
	return out, nil
}

func (s *memoryStore) LockSetup(context.Context, string) (func(), error) { return func() {}, nil }

func (s *memoryStore) TreeID(_ context.Context, origin string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trees[origin], nil
}

func (s *memoryStore) SetTreeID(_ context.Context, origin string, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trees[origin] = id
	return nil
}

func (s *memoryStore) LatestCheckpoint(_ context.Context, origin string) (*signedCheckpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.latest[origin], nil
}

func (s *memoryStore) RecordCheckpoint(_ context.Context, origin string, prev *signedCheckpoint, next signedCheckpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.latest[origin]
	if (cur == nil) != (prev == nil) || cur != nil && (cur.Size != prev.Size || !bytes.Equal(cur.Root, prev.Root)) {
		return errCheckpointRace
	}
	s.latest[origin] = &next
	return nil
}
