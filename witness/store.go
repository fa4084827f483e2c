package witness

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // pure-Go SQLite driver, registered as "sqlite"
)

// StateFile is the name of the SQLite database inside the state directory.
const StateFile = "witness.db"

// store is the witness's durable state: the pinned key of every log it has
// been configured with, the latest checkpoint it cosigned per log, and the
// split-view evidence it found. It is one SQLite file in WAL mode with
// synchronous=FULL, so a committed transaction survives a crash or power
// loss.
type store struct {
	db *sql.DB
	// writeMu serialises write transactions inside this process. SQLite's
	// BEGIN IMMEDIATE already serialises writers across processes (the
	// witness and the evidence command); the mutex only saves goroutines
	// from spinning on SQLITE_BUSY.
	writeMu sync.Mutex
}

const schema = `
CREATE TABLE IF NOT EXISTS logs (
	origin    TEXT PRIMARY KEY,
	vkey      TEXT NOT NULL,
	pinned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS latest (
	origin     TEXT PRIMARY KEY REFERENCES logs(origin),
	size       INTEGER NOT NULL CHECK (size >= 0),
	root       BLOB NOT NULL,
	note       BLOB NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	pair       TEXT NOT NULL UNIQUE,
	origin     TEXT NOT NULL,
	peer       TEXT NOT NULL,
	peer_url   TEXT NOT NULL,
	reason     TEXT NOT NULL,
	detail     TEXT NOT NULL,
	ours       BLOB NOT NULL,
	theirs     BLOB NOT NULL,
	proof      TEXT NOT NULL,
	found_at   INTEGER NOT NULL,
	cleared_at INTEGER
);
CREATE INDEX IF NOT EXISTS evidence_open ON evidence(origin) WHERE cleared_at IS NULL;
`

// openStore opens (creating if needed) the state database in dir.
func openStore(dir string) (*store, error) {
	if dir == "" {
		return nil, errors.New("witness: no state directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: state directory: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	// _txlock=immediate makes every BeginTx take the write lock at once, so
	// the read-check-write of a compare-and-swap cannot interleave with
	// another writer, in this process or another.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("witness: open %s: %w", path, err)
	}
	s := &store{db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("witness: open %s: %w", path, err)
	}
	return s, nil
}

func (s *store) init() error {
	ctx := context.Background()
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if mode != "wal" {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	var sync int
	if err := s.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if sync != 2 { // FULL
		return fmt.Errorf("synchronous is %d, want 2 (FULL)", sync)
	}
	_, err := s.db.ExecContext(ctx, schema)
	return err
}

func (s *store) close() error { return s.db.Close() }

// write runs fn in one write transaction (BEGIN IMMEDIATE) and commits it.
func (s *store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("witness: begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("witness: commit: %w", err)
	}
	return nil
}

// ErrKeyChanged means the configuration names a log the witness already
// knows with a different key than the one pinned in its state.
var ErrKeyChanged = errors.New("witness: log key differs from the key pinned in the state database")

// pinKey records vkey as the key of origin, or checks that it is the key
// already recorded. A log's key never changes silently: a different key is
// an error the operator must resolve.
func (s *store) pinKey(ctx context.Context, origin, vkey string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var pinned string
		err := tx.QueryRowContext(ctx, "SELECT vkey FROM logs WHERE origin = ?", origin).Scan(&pinned)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, "INSERT INTO logs (origin, vkey, pinned_at) VALUES (?, ?, ?)", origin, vkey, time.Now().Unix())
			return err
		case err != nil:
			return err
		case pinned != vkey:
			return fmt.Errorf("%w: log %q is configured with key %q but the state pins %q", ErrKeyChanged, origin, vkey, pinned)
		}
		return nil
	})
}

// cosigned is the latest checkpoint the witness cosigned for a log.
type cosigned struct {
	Size uint64
	Root []byte
	// Note is the checkpoint with the log's verified signature(s) and the
	// witness's own cosignature, as served on the monitoring endpoint.
	Note []byte
}

func (s *store) latest(ctx context.Context, origin string) (*cosigned, error) {
	return latestIn(ctx, s.db, origin)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func latestIn(ctx context.Context, q querier, origin string) (*cosigned, error) {
	var c cosigned
	var size int64
	err := q.QueryRowContext(ctx, "SELECT size, root, note FROM latest WHERE origin = ?", origin).Scan(&size, &c.Root, &c.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("witness: read latest checkpoint: %w", err)
	}
	c.Size = uint64(size)
	return &c, nil
}

func frozenIn(ctx context.Context, q querier, origin string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM evidence WHERE origin = ? AND cleared_at IS NULL", origin).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("witness: read evidence: %w", err)
	}
	return n > 0, nil
}

func (s *store) frozen(ctx context.Context, origin string) (bool, error) {
	return frozenIn(ctx, s.db, origin)
}

// advance is the witness's compare-and-swap. In one write transaction it
// reads the latest cosigned checkpoint of origin (nil if none) and whether
// the log is frozen by open evidence, hands both to decide, and stores what
// decide returns. If decide fails, nothing is written. The transaction is
// committed, and so on disk, before advance returns.
func (s *store) advance(ctx context.Context, origin string, decide func(cur *cosigned, frozen bool) (*cosigned, error)) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		cur, err := latestIn(ctx, tx, origin)
		if err != nil {
			return err
		}
		frozen, err := frozenIn(ctx, tx, origin)
		if err != nil {
			return err
		}
		next, err := decide(cur, frozen)
		if err != nil {
			return err
		}
		if next.Size > math.MaxInt64 {
			return fmt.Errorf("witness: size %d does not fit the store", next.Size)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO latest (origin, size, root, note, updated_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note, updated_at = excluded.updated_at`,
			origin, int64(next.Size), next.Root, next.Note, time.Now().Unix())
		if err != nil {
			return fmt.Errorf("witness: store checkpoint: %w", err)
		}
		return nil
	})
}

// pairKey identifies a pair of conflicting checkpoints independently of
// their order and of the cosignatures they carry, so the same split view
// found again (in another round, or by the other side) is stored once.
func pairKey(origin, a, b string) string {
	if b < a {
		a, b = b, a
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s%d:%s%d:%s", len(origin), origin, len(a), a, len(b), b)
	return hex.EncodeToString(h.Sum(nil))
}

// addEvidence stores e unless the same pair of checkpoints is already on
// record. It reports whether e was new, and sets e.ID.
func (s *store) addEvidence(ctx context.Context, e *Evidence) (bool, error) {
	proof, err := json.Marshal(e.Proof)
	if err != nil {
		return false, err
	}
	pair := pairKey(e.Origin, noteText(e.Ours), noteText(e.Theirs))
	inserted := false
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO evidence (pair, origin, peer, peer_url, reason, detail, ours, theirs, proof, found_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (pair) DO NOTHING`,
			pair, e.Origin, e.Peer, e.PeerURL, e.Reason, e.Detail, []byte(e.Ours), []byte(e.Theirs), string(proof), e.FoundAt.UnixMilli())
		if err != nil {
			return fmt.Errorf("witness: store evidence: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		inserted = true
		e.ID, err = res.LastInsertId()
		return err
	})
	return inserted, err
}

// listEvidence returns the evidence on record, oldest first; for one origin
// if origin is not empty.
func (s *store) listEvidence(ctx context.Context, origin string) ([]Evidence, error) {
	q := `SELECT id, origin, peer, peer_url, reason, detail, ours, theirs, proof, found_at, cleared_at FROM evidence`
	var args []any
	if origin != "" {
		q += " WHERE origin = ?"
		args = append(args, origin)
	}
	q += " ORDER BY id"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("witness: read evidence: %w", err)
	}
	defer rows.Close()
	list := []Evidence{}
	for rows.Next() {
		var e Evidence
		var ours, theirs []byte
		var proof string
		var found int64
		var cleared sql.NullInt64
		if err := rows.Scan(&e.ID, &e.Origin, &e.Peer, &e.PeerURL, &e.Reason, &e.Detail, &ours, &theirs, &proof, &found, &cleared); err != nil {
			return nil, fmt.Errorf("witness: read evidence: %w", err)
		}
		e.Ours, e.Theirs = string(ours), string(theirs)
		if err := json.Unmarshal([]byte(proof), &e.Proof); err != nil {
			return nil, fmt.Errorf("witness: read evidence %d: %w", e.ID, err)
		}
		e.FoundAt = time.UnixMilli(found).UTC()
		if cleared.Valid {
			t := time.UnixMilli(cleared.Int64).UTC()
			e.ClearedAt = &t
		}
		list = append(list, e)
	}
	return list, rows.Err()
}

// clearEvidence marks every open piece of evidence for origin as cleared
// and returns how many there were. Cleared evidence stays on record.
func (s *store) clearEvidence(ctx context.Context, origin string) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE evidence SET cleared_at = ? WHERE origin = ? AND cleared_at IS NULL", time.Now().UnixMilli(), origin)
		if err != nil {
			return fmt.Errorf("witness: clear evidence: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// openExistingStore opens the state database in dir, which must exist: the
// operator commands must not create an empty state by mistake.
func openExistingStore(dir string) (*store, error) {
	path := filepath.Join(dir, StateFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("witness: no state database in %s: %w", dir, err)
	}
	return openStore(dir)
}
