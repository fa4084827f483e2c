package monitor

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // pure-Go SQLite driver, registered as "sqlite"
)

// store is the monitor's durable state in one SQLite file (WAL journal,
// synchronous=FULL, so a committed transaction survives a crash).
//
// Invariant kept here: the replay position, the compact range that covers
// exactly the entries before it, the watch-rule state, the patient index
// rows and the alerts of a batch are written in one transaction, and only
// after the batch was verified against a signed root. A monitor killed at
// any point resumes from a position whose every entry was verified, and
// skips none.
type store struct {
	db      *sql.DB
	outbox  bool // queue alerts for the webhook
	nowNano func() int64
}

const schema = `
CREATE TABLE IF NOT EXISTS logs (
	id     INTEGER PRIMARY KEY,
	origin TEXT NOT NULL UNIQUE
);
-- The log's latest checkpoint that verified: signature, policy, and
-- consistency with everything held before it.
CREATE TABLE IF NOT EXISTS verified (
	log_id      INTEGER PRIMARY KEY,
	size        INTEGER NOT NULL,
	root        BLOB NOT NULL,
	note        BLOB NOT NULL,
	advanced_at INTEGER NOT NULL
);
-- Log-signed checkpoints from every source, proven mutually consistent.
CREATE TABLE IF NOT EXISTS held (
	log_id  INTEGER NOT NULL,
	size    INTEGER NOT NULL,
	root    BLOB NOT NULL,
	note    BLOB NOT NULL,
	source  TEXT NOT NULL,
	seen_at INTEGER NOT NULL,
	PRIMARY KEY (log_id, size)
);
CREATE TABLE IF NOT EXISTS replay (
	log_id   INTEGER PRIMARY KEY,
	position INTEGER NOT NULL,
	range    BLOB NOT NULL,
	rules    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS patients (
	log_id    INTEGER NOT NULL,
	pseudonym TEXT NOT NULL,
	idx       INTEGER NOT NULL,
	PRIMARY KEY (log_id, pseudonym, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	key          TEXT NOT NULL UNIQUE,
	kind         TEXT NOT NULL,
	class        TEXT NOT NULL,
	log          TEXT NOT NULL,
	at           INTEGER NOT NULL,
	body         BLOB NOT NULL,
	acked        INTEGER NOT NULL DEFAULT 0,
	delivered_at INTEGER
);
CREATE TABLE IF NOT EXISTS outbox (
	alert_id   INTEGER PRIMARY KEY,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    INTEGER NOT NULL,
	last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS promises (
	log_id       INTEGER NOT NULL,
	leaf_hash    BLOB NOT NULL,
	accepted     INTEGER NOT NULL,
	note         BLOB NOT NULL,
	state        TEXT NOT NULL,
	idx          INTEGER,
	checked_size INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (log_id, leaf_hash)
);
`

// Promise states.
const (
	promisePending = "pending"
	promiseKept    = "kept"
	promiseBroken  = "broken"
)

func openStore(dir string, outbox bool) (*store, error) {
	if dir == "" {
		return nil, errors.New("monitor: a state directory is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("monitor state: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + filepath.Join(dir, "monitor.db") + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("monitor state: %w", err)
	}
	// One connection: SQLite has one writer anyway, and a single connection
	// makes every statement see the previous one's writes.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("monitor state: %w", err)
	}
	return &store{db: db, outbox: outbox, nowNano: func() int64 { return time.Now().UnixNano() }}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) logID(ctx context.Context, origin string) (int64, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO logs(origin) VALUES(?) ON CONFLICT(origin) DO NOTHING`, origin); err != nil {
		return 0, err
	}
	var id int64
	err := s.db.QueryRowContext(ctx, `SELECT id FROM logs WHERE origin = ?`, origin).Scan(&id)
	return id, err
}

// storedCheckpoint is a checkpoint as the store keeps it.
type storedCheckpoint struct {
	Size   uint64
	Root   []byte
	Note   []byte
	Source string
	At     time.Time // verified: when it last advanced; held: when first seen
}

func (s *store) verified(ctx context.Context, logID int64) (*storedCheckpoint, error) {
	var c storedCheckpoint
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT size, root, note, advanced_at FROM verified WHERE log_id = ?`, logID).
		Scan(&c.Size, &c.Root, &c.Note, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c.At, c.Source = time.Unix(0, at), "log"
	return &c, nil
}

func (s *store) setVerified(ctx context.Context, logID int64, c storedCheckpoint) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO verified(log_id, size, root, note, advanced_at) VALUES(?,?,?,?,?)
		ON CONFLICT(log_id) DO UPDATE SET size=excluded.size, root=excluded.root, note=excluded.note, advanced_at=excluded.advanced_at`,
		logID, c.Size, c.Root, c.Note, c.At.UnixNano())
	return err
}

// neighbours returns the held checkpoint of the same size, the largest
// smaller one and the smallest larger one (each nil if none).
func (s *store) neighbours(ctx context.Context, logID int64, size uint64) (same, pred, succ *storedCheckpoint, err error) {
	get := func(q string) (*storedCheckpoint, error) {
		var c storedCheckpoint
		var at int64
		err := s.db.QueryRowContext(ctx, q, logID, size).Scan(&c.Size, &c.Root, &c.Note, &c.Source, &at)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, nil
		}
		c.At = time.Unix(0, at)
		return &c, err
	}
	const cols = `SELECT size, root, note, source, seen_at FROM held WHERE log_id = ? `
	if same, err = get(cols + `AND size = ?`); err != nil {
		return
	}
	if pred, err = get(cols + `AND size < ? ORDER BY size DESC LIMIT 1`); err != nil {
		return
	}
	succ, err = get(cols + `AND size > ? ORDER BY size ASC LIMIT 1`)
	return
}

func (s *store) hold(ctx context.Context, logID int64, c storedCheckpoint) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO held(log_id, size, root, note, source, seen_at) VALUES(?,?,?,?,?,?)
		ON CONFLICT(log_id, size) DO NOTHING`, logID, c.Size, c.Root, c.Note, c.Source, c.At.UnixNano())
	return err
}

// heldIn returns the held checkpoints with lo < size <= hi, by size.
func (s *store) heldIn(ctx context.Context, logID int64, lo, hi uint64) ([]storedCheckpoint, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT size, root, note, source FROM held WHERE log_id = ? AND size > ? AND size <= ? ORDER BY size`, logID, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedCheckpoint
	for rows.Next() {
		var c storedCheckpoint
		if err := rows.Scan(&c.Size, &c.Root, &c.Note, &c.Source); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// replayState is what a replay resumes from.
type replayState struct {
	Position uint64
	Range    [][]byte // compact range hashes of [0, Position)
	Rules    []byte   // watch-rule state, JSON
}

func (s *store) replayState(ctx context.Context, logID int64) (replayState, error) {
	var st replayState
	var rng []byte
	err := s.db.QueryRowContext(ctx, `SELECT position, range, rules FROM replay WHERE log_id = ?`, logID).Scan(&st.Position, &rng, &st.Rules)
	if errors.Is(err, sql.ErrNoRows) {
		return replayState{}, nil
	}
	if err != nil {
		return st, err
	}
	if len(rng)%32 != 0 {
		return st, fmt.Errorf("monitor state: compact range of %d bytes", len(rng))
	}
	for i := 0; i < len(rng); i += 32 {
		st.Range = append(st.Range, rng[i:i+32])
	}
	return st, nil
}

// patientRow is one entry of the monitor's own pseudonym index.
type patientRow struct {
	Pseudonym string
	Index     uint64
}

// commitBatch persists a verified batch in one transaction: the new replay
// state, the pseudonym index rows and the alerts. It returns the alerts that
// were new (an alert raised before a crash and raised again on resume is
// not new). Held checkpoints left behind by the replay are pruned, keeping
// the largest one at or below the position.
func (s *store) commitBatch(ctx context.Context, logID int64, st replayState, rows []patientRow, alerts []Alert) ([]Alert, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rng := make([]byte, 0, 32*len(st.Range))
	for _, h := range st.Range {
		rng = append(rng, h...)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO replay(log_id, position, range, rules) VALUES(?,?,?,?)
		ON CONFLICT(log_id) DO UPDATE SET position=excluded.position, range=excluded.range, rules=excluded.rules`,
		logID, st.Position, rng, st.Rules); err != nil {
		return nil, err
	}
	if len(rows) > 0 {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO patients(log_id, pseudonym, idx) VALUES(?,?,?) ON CONFLICT DO NOTHING`)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if _, err := stmt.ExecContext(ctx, logID, r.Pseudonym, r.Index); err != nil {
				stmt.Close()
				return nil, err
			}
		}
		stmt.Close()
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM held WHERE log_id = ? AND size < (SELECT MAX(size) FROM held WHERE log_id = ? AND size <= ?)`,
		logID, logID, st.Position); err != nil {
		return nil, err
	}
	raised, err := s.insertAlerts(ctx, tx, alerts)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return raised, nil
}

// raise stores alerts not seen before (by key) and queues them for the
// webhook, in one transaction; it returns the new ones with their IDs.
func (s *store) raise(ctx context.Context, alerts ...Alert) ([]Alert, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	raised, err := s.insertAlerts(ctx, tx, alerts)
	if err != nil {
		return nil, err
	}
	return raised, tx.Commit()
}

func (s *store) insertAlerts(ctx context.Context, tx *sql.Tx, alerts []Alert) ([]Alert, error) {
	var raised []Alert
	for _, a := range alerts {
		a.UID = uid(a.key)
		body, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO alerts(key, kind, class, log, at, body) VALUES(?,?,?,?,?,?) ON CONFLICT(key) DO NOTHING`,
			a.key, a.Kind, a.Class, a.Log, a.Time.UnixNano(), body)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue
		}
		if a.ID, err = res.LastInsertId(); err != nil {
			return nil, err
		}
		if s.outbox {
			if _, err := tx.ExecContext(ctx, `INSERT INTO outbox(alert_id, next_at) VALUES(?, ?)`, a.ID, s.nowNano()); err != nil {
				return nil, err
			}
		}
		raised = append(raised, a)
	}
	return raised, nil
}

// AlertFilter selects alerts for listing.
type AlertFilter struct {
	// AfterID lists alerts with a larger ID only.
	AfterID int64
	// Kind, Log and Class, if set, must match.
	Kind  Kind
	Log   string
	Class Class
	// Limit caps the answer (default 1000).
	Limit int
}

func (s *store) alerts(ctx context.Context, f AlertFilter) ([]Alert, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, body, acked FROM alerts WHERE id > ?
		AND (? = '' OR kind = ?) AND (? = '' OR log = ?) AND (? = '' OR class = ?) ORDER BY id LIMIT ?`,
		f.AfterID, f.Kind, f.Kind, f.Log, f.Log, f.Class, f.Class, f.Limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		var a Alert
		var body []byte
		var id, acked int64
		if err := rows.Scan(&id, &body, &acked); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return nil, err
		}
		a.ID, a.Acknowledged = id, acked != 0
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *store) acknowledge(ctx context.Context, ids []int64) (int, error) {
	n := 0
	for _, id := range ids {
		res, err := s.db.ExecContext(ctx, `UPDATE alerts SET acked = 1 WHERE id = ? AND acked = 0`, id)
		if err != nil {
			return n, err
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	return n, nil
}

func (s *store) openIntegrity(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM alerts WHERE class = ? AND acked = 0`, ClassIntegrity).Scan(&n)
	return n, err
}

func (s *store) alertCounts(ctx context.Context, log string) (map[Kind]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, COUNT(*) FROM alerts WHERE log = ? GROUP BY kind`, log)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[Kind]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[Kind(k)] = n
	}
	return out, rows.Err()
}

// outboxItem is an alert waiting for delivery.
type outboxItem struct {
	Alert    Alert
	Attempts int
}

// dueOutbox returns undelivered alerts whose next attempt is due, oldest
// first, and the time the next one not yet due is, if any.
func (s *store) dueOutbox(ctx context.Context, now time.Time, limit int) ([]outboxItem, time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT o.attempts, a.id, a.body FROM outbox o JOIN alerts a ON a.id = o.alert_id
		WHERE o.next_at <= ? ORDER BY a.id LIMIT ?`, now.UnixNano(), limit)
	if err != nil {
		return nil, time.Time{}, err
	}
	var out []outboxItem
	for rows.Next() {
		var it outboxItem
		var body []byte
		if err := rows.Scan(&it.Attempts, &it.Alert.ID, &body); err != nil {
			rows.Close()
			return nil, time.Time{}, err
		}
		id := it.Alert.ID
		if err := json.Unmarshal(body, &it.Alert); err != nil {
			rows.Close()
			return nil, time.Time{}, err
		}
		it.Alert.ID = id
		out = append(out, it)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, err
	}
	var next sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MIN(next_at) FROM outbox WHERE next_at > ?`, now.UnixNano()).Scan(&next); err != nil {
		return nil, time.Time{}, err
	}
	var nextAt time.Time
	if next.Valid {
		nextAt = time.Unix(0, next.Int64)
	}
	return out, nextAt, nil
}

func (s *store) delivered(ctx context.Context, id int64, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE alert_id = ?`, id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE alerts SET delivered_at = ? WHERE id = ?`, at.UnixNano(), id); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *store) deliveryFailed(ctx context.Context, id int64, attempts int, next time.Time, msg string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE alert_id = ?`,
		attempts, next.UnixNano(), msg, id)
	return err
}

func (s *store) outboxLen(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox`).Scan(&n)
	return n, err
}

// addPromise records a verified promise; it reports whether it was new.
func (s *store) addPromise(ctx context.Context, logID int64, leafHash []byte, accepted time.Time, note []byte) (bool, error) {
	res, err := s.db.ExecContext(ctx, `INSERT INTO promises(log_id, leaf_hash, accepted, note, state) VALUES(?,?,?,?,?)
		ON CONFLICT(log_id, leaf_hash) DO NOTHING`, logID, leafHash, accepted.UnixNano(), note, promisePending)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// storedPromise is a promise still pending.
type storedPromise struct {
	LeafHash    []byte
	Accepted    time.Time
	Note        []byte
	CheckedSize uint64
}

func (s *store) pendingPromises(ctx context.Context, logID int64) ([]storedPromise, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT leaf_hash, accepted, note, checked_size FROM promises
		WHERE log_id = ? AND state = ? ORDER BY accepted`, logID, promisePending)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedPromise
	for rows.Next() {
		var p storedPromise
		var at int64
		if err := rows.Scan(&p.LeafHash, &at, &p.Note, &p.CheckedSize); err != nil {
			return nil, err
		}
		p.Accepted = time.Unix(0, at)
		out = append(out, p)
	}
	return out, rows.Err()
}

func (s *store) setPromise(ctx context.Context, logID int64, leafHash []byte, state string, idx *uint64, checkedSize uint64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE promises SET state = ?, idx = ?, checked_size = ? WHERE log_id = ? AND leaf_hash = ?`,
		state, idx, checkedSize, logID, leafHash)
	return err
}

func (s *store) patientIndices(ctx context.Context, logID int64, pseudonym string) ([]uint64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT idx FROM patients WHERE log_id = ? AND pseudonym = ? ORDER BY idx`, logID, pseudonym)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []uint64{}
	for rows.Next() {
		var i uint64
		if err := rows.Scan(&i); err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, rows.Err()
}
