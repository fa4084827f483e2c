package personality

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"

	"github.com/google/trillian"
	"github.com/google/trillian/monitoring"
	tmysql "github.com/google/trillian/storage/mysql"
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

// TrillianServerConfig runs Trillian's roles as their own process (see
// cmd/carelog-trillian): the gRPC log and admin server, the sequencer, or
// both, on MariaDB/MySQL. carelog-log then points at it with --trillian-log.
type TrillianServerConfig struct {
	MySQLDSN string
	// Schema is the path of Trillian's storage.sql (empty: found in the Go
	// module cache).
	Schema string
	// Listener, if set, serves the log and admin gRPC APIs.
	Listener net.Listener
	// Sequencer runs the sequencer. Run exactly one sequencer per database.
	Sequencer bool
	// Tuning holds the sequencer settings (SequencerInterval,
	// SequencerBatch) and the Logger; other fields are ignored.
	Tuning Config
}

// RunTrillian runs the configured Trillian roles until ctx ends.
func RunTrillian(ctx context.Context, cfg TrillianServerConfig) error {
	if cfg.Listener == nil && !cfg.Sequencer {
		return errors.New("nothing to run: give a listener, the sequencer, or both")
	}
	seq := cfg.Tuning
	seq.Defaults()
	db, err := openDatabase(ctx, cfg.MySQLDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := provisionTrillianSchema(ctx, db, cfg.Schema); err != nil {
		return err
	}
	quietTrillian()
	reg := extensionRegistry(tmysql.NewAdminStorage(db), tmysql.NewLogStorage(db, monitoring.InertMetricFactory{}))
	done := make(chan struct{})
	if cfg.Sequencer {
		go func() { defer close(done); runSequencer(ctx, reg, seq) }()
		seq.Logger.Info("sequencing", slog.Duration("interval", seq.SequencerInterval), slog.Int("batch", seq.SequencerBatch))
	} else {
		close(done)
	}
	if cfg.Listener != nil {
		gs := newTrillianGRPCServer(reg)
		go func() {
			<-ctx.Done()
			gs.GracefulStop()
		}()
		seq.Logger.Info("serving Trillian gRPC", slog.String("addr", cfg.Listener.Addr().String()))
		if err := gs.Serve(cfg.Listener); err != nil {
			return err
		}
	}
	<-done
	return nil
}
