package tiles

import (
	"bytes"
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
)

//go:embed schema.sql
var schema string

// Schema is the SQL of the tables the tiles keep (created automatically by
// New; operators who provision by hand apply it as is).
func Schema() string { return schema }

// position is how far the stored tiles of a log go: verified up to size
// (whose root is root), written up to pending.
type position struct {
	size    uint64
	root    []byte
	pending uint64
}

// errMoved means another writer moved the stored position since it was read.
var errMoved = errors.New("tiles: another writer moved the stored tiles concurrently; catch up again")

// store keeps one log's tiles durably.
type store interface {
	position(ctx context.Context) (position, error)
	// readTile returns the stored hashes of tile n at level, nil if none.
	readTile(ctx context.Context, level uint, n uint64) ([]byte, error)
	// commit writes rows and moves the position from prev to next in one
	// transaction, or does nothing and returns errMoved if the stored
	// position is no longer prev.
	commit(ctx context.Context, prev, next position, rows []tileRow) error
}

// mysqlStore keeps tiles in MariaDB/MySQL.
type mysqlStore struct {
	db     *sql.DB
	origin string
}

func newMySQLStore(ctx context.Context, db *sql.DB, origin string) (*mysqlStore, error) {
	for _, stmt := range statements(schema) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("tiles: creating tables: %w", err)
		}
	}
	if _, err := db.ExecContext(ctx, "INSERT IGNORE INTO carelog_tile_state (origin, size, root, pending) VALUES (?, 0, ?, 0)", origin, emptyRoot); err != nil {
		return nil, fmt.Errorf("tiles: creating the position of %q: %w", origin, err)
	}
	return &mysqlStore{db: db, origin: origin}, nil
}

// statements splits the schema into statements, dropping comment lines.
func statements(sqlText string) []string {
	var b strings.Builder
	for line := range strings.SplitSeq(sqlText, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	var out []string
	for s := range strings.SplitSeq(b.String(), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (s *mysqlStore) position(ctx context.Context) (position, error) {
	var p position
	err := s.db.QueryRowContext(ctx, "SELECT size, root, pending FROM carelog_tile_state WHERE origin = ?", s.origin).Scan(&p.size, &p.root, &p.pending)
	if err != nil {
		return position{}, fmt.Errorf("tiles: reading the stored position: %w", err)
	}
	return p, nil
}

func (s *mysqlStore) readTile(ctx context.Context, level uint, n uint64) ([]byte, error) {
	var h []byte
	err := s.db.QueryRowContext(ctx, "SELECT hashes FROM carelog_tile_hashes WHERE origin = ? AND tile_level = ? AND tile_index = ?", s.origin, level, n).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tiles: reading tile %d/%d: %w", level, n, err)
	}
	return h, nil
}

// rowsPerInsert bounds one multi-row INSERT to 256 KiB of hashes, well
// under MariaDB's default max_allowed_packet.
const rowsPerInsert = 32

func (s *mysqlStore) commit(ctx context.Context, prev, next position, rows []tileRow) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tiles: storing tiles: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var cur position
	// FOR UPDATE: two replicas catching up the same log serialise here, and
	// the loser writes nothing.
	if err := tx.QueryRowContext(ctx, "SELECT size, root, pending FROM carelog_tile_state WHERE origin = ? FOR UPDATE", s.origin).
		Scan(&cur.size, &cur.root, &cur.pending); err != nil {
		return fmt.Errorf("tiles: reading the stored position: %w", err)
	}
	if cur.size != prev.size || cur.pending != prev.pending || !bytes.Equal(cur.root, prev.root) {
		return errMoved
	}
	for len(rows) > 0 {
		batch := rows[:min(len(rows), rowsPerInsert)]
		rows = rows[len(batch):]
		q := "INSERT INTO carelog_tile_hashes (origin, tile_level, tile_index, hashes) VALUES " +
			strings.Repeat("(?, ?, ?, ?), ", len(batch)-1) + "(?, ?, ?, ?)" +
			" ON DUPLICATE KEY UPDATE hashes = VALUES(hashes)"
		args := make([]any, 0, 4*len(batch))
		for _, r := range batch {
			args = append(args, s.origin, r.level, r.n, r.hashes)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("tiles: storing tiles: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE carelog_tile_state SET size = ?, root = ?, pending = ? WHERE origin = ?",
		next.size, next.root, next.pending, s.origin); err != nil {
		return fmt.Errorf("tiles: storing the position: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tiles: committing tiles: %w", err)
	}
	return nil
}

// memoryStore keeps tiles in memory: the log's try-out mode, which keeps
// nothing across restarts.
type memoryStore struct {
	mu    sync.Mutex
	pos   position
	tiles map[memoryKey][]byte
}

type memoryKey struct {
	level uint
	n     uint64
}

func newMemoryStore() *memoryStore {
	return &memoryStore{pos: position{root: emptyRoot}, tiles: make(map[memoryKey][]byte)}
}

func (s *memoryStore) position(context.Context) (position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos, nil
}

func (s *memoryStore) readTile(_ context.Context, level uint, n uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tiles[memoryKey{level, n}], nil
}

func (s *memoryStore) commit(_ context.Context, prev, next position, rows []tileRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos.size != prev.size || s.pos.pending != prev.pending || !bytes.Equal(s.pos.root, prev.root) {
		return errMoved
	}
	for _, r := range rows {
		// Copies: the caller's buffers keep changing, and stored rows are
		// handed out to readers.
		s.tiles[memoryKey{r.level, r.n}] = append([]byte(nil), r.hashes...)
	}
	s.pos = position{size: next.size, root: append([]byte(nil), next.root...), pending: next.pending}
	return nil
}
