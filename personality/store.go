package personality

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
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
	TreeID(ctx context.Context, origin string) (int64, error)
	SetTreeID(ctx context.Context, origin string, id int64) error
	// LatestCheckpoint returns the latest signed checkpoint, nil if none.
	LatestCheckpoint(ctx context.Context, origin string) (*signedCheckpoint, error)
	// RecordCheckpoint durably records next as the latest signed checkpoint
	// if prev (nil: none) is still the latest; otherwise errCheckpointRace.
	RecordCheckpoint(ctx context.Context, origin string, prev *signedCheckpoint, next signedCheckpoint) error
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

// memoryStore keeps state in memory: the try-out mode, which keeps nothing.
type memoryStore struct {
	mu     sync.Mutex
	trees  map[string]int64
	latest map[string]*signedCheckpoint
}

func newMemoryStore() *memoryStore {
	return &memoryStore{trees: map[string]int64{}, latest: map[string]*signedCheckpoint{}}
}

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
