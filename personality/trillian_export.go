package personality

import (
	"context"
	"database/sql"

	"github.com/google/trillian"
)

// Trillian is an in-process Trillian (log server, admin server and
// sequencer) on MariaDB/MySQL, as carelog-log runs it. Benchmarks use it as
// the reference: raw Trillian on the same database in the same run.
type Trillian struct {
	Log   trillian.TrillianLogClient
	Admin trillian.TrillianAdminClient
	DB    *sql.DB
	conn  *trillianConn
}

// StartTrillian connects to the database in dsn (creating it and Trillian's
// tables if needed) and starts Trillian in-process with the given sequencer
// settings (zero values: carelog-log's defaults).
func StartTrillian(ctx context.Context, dsn string, seq Config) (*Trillian, error) {
	seq.Defaults()
	db, err := openDatabase(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := provisionTrillianSchema(ctx, db, seq.TrillianSchema); err != nil {
		db.Close()
		return nil, err
	}
	quietTrillian()
	tc, err := mysqlTrillian(ctx, db, seq)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Trillian{Log: tc.log, Admin: tc.admin, DB: db, conn: tc}, nil
}

// Close stops Trillian and closes the database.
func (t *Trillian) Close() {
	t.conn.close()
	t.DB.Close()
}
