package personality

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/google/trillian"
	"github.com/google/trillian/extension"
	tlog "github.com/google/trillian/log"
	"github.com/google/trillian/monitoring"
	"github.com/google/trillian/quota"
	"github.com/google/trillian/server"
	"github.com/google/trillian/server/admin"
	"github.com/google/trillian/storage"
	"github.com/google/trillian/storage/memory"
	tmysql "github.com/google/trillian/storage/mysql"
	"github.com/google/trillian/util/clock"
	"github.com/google/trillian/util/election"
	"github.com/google/trillian/util/election2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
)

// trillianConn is how the personality reaches Trillian: a log client and
// an admin client. In-process mode runs a Trillian log
// server, admin server and sequencer inside this process and talks to them
// over an in-memory gRPC connection, so the code path is the same as with
// external Trillian servers.
type trillianConn struct {
	log   trillian.TrillianLogClient
	admin trillian.TrillianAdminClient
	close func()
}

// startInProcessTrillian runs Trillian's log server, admin server and
// sequencer on storage as/ls. It returns once the gRPC services are ready.
func startInProcessTrillian(ctx context.Context, as storage.AdminStorage, ls storage.LogStorage, cfg Config) (*trillianConn, error) {
	reg := extensionRegistry(as, ls)
	lis := bufconn.Listen(4 << 20)
	gs := newTrillianGRPCServer(reg)
	go func() { _ = gs.Serve(lis) }()

	cc, err := grpc.NewClient("passthrough:///trillian-in-process",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		gs.Stop()
		return nil, err
	}

	seqCtx, stopSeq := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		runSequencer(seqCtx, reg, cfg)
	}()
	return &trillianConn{
		log:   trillian.NewTrillianLogClient(cc),
		admin: trillian.NewTrillianAdminClient(cc),
		close: func() {
			stopSeq()
			<-done
			_ = cc.Close()
			gs.Stop()
		},
	}, nil
}

// newTrillianGRPCServer serves Trillian's log and admin APIs on reg.
func newTrillianGRPCServer(reg extension.Registry) *grpc.Server {
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	trillian.RegisterTrillianLogServer(gs, server.NewTrillianLogRPCServer(reg, clock.System))
	trillian.RegisterTrillianAdminServer(gs, admin.New(reg, []trillian.TreeType{trillian.TreeType_LOG, trillian.TreeType_PREORDERED_LOG}))
	return gs
}

// runSequencer runs Trillian's sequencer (integration of queued or
// pre-ordered leaves into the Merkle tree) until ctx ends. It assumes it is
// the only sequencer of its trees: run exactly one.
func runSequencer(ctx context.Context, reg extension.Registry, cfg Config) {
	info := tlog.OperationInfo{
		Registry:    reg,
		BatchSize:   cfg.SequencerBatch,
		NumWorkers:  1,
		RunInterval: cfg.SequencerInterval,
		TimeSource:  clock.System,
		ElectionConfig: election.RunnerConfig{
			PreElectionPause:   10 * time.Millisecond,
			MasterHoldInterval: time.Hour,
			TimeSource:         clock.System,
		},
	}
	tlog.NewOperationManager(info, tlog.NewSequencerManager(reg, 0)).OperationLoop(ctx)
}

func extensionRegistry(as storage.AdminStorage, ls storage.LogStorage) extension.Registry {
	return extension.Registry{
		AdminStorage:    as,
		LogStorage:      ls,
		ElectionFactory: election2.NoopFactory{},
		QuotaManager:    quota.Noop(),
		MetricFactory:   monitoring.InertMetricFactory{},
	}
}

// memoryTrillian is Trillian on its memory storage: for try-outs only.
func memoryTrillian(ctx context.Context, cfg Config) (*trillianConn, error) {
	ts := memory.NewTreeStorage()
	return startInProcessTrillian(ctx, memory.NewAdminStorage(ts), memory.NewLogStorage(ts, monitoring.InertMetricFactory{}), cfg)
}

// mysqlTrillian is Trillian in-process on MariaDB/MySQL.
func mysqlTrillian(ctx context.Context, db *sql.DB, cfg Config) (*trillianConn, error) {
	return startInProcessTrillian(ctx, tmysql.NewAdminStorage(db), tmysql.NewLogStorage(db, monitoring.InertMetricFactory{}), cfg)
}

// externalTrillian dials separate Trillian log and admin servers.
func externalTrillian(cfg Config) (*trillianConn, error) {
	dial := func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	}
	lc, err := dial(cfg.TrillianLogAddr)
	if err != nil {
		return nil, fmt.Errorf("trillian log server %s: %w", cfg.TrillianLogAddr, err)
	}
	adminAddr := cfg.TrillianAdminAddr
	if adminAddr == "" {
		adminAddr = cfg.TrillianLogAddr
	}
	ac, err := dial(adminAddr)
	if err != nil {
		_ = lc.Close()
		return nil, fmt.Errorf("trillian admin server %s: %w", adminAddr, err)
	}
	return &trillianConn{
		log:   trillian.NewTrillianLogClient(lc),
		admin: trillian.NewTrillianAdminClient(ac),
		close: func() { _ = lc.Close(); _ = ac.Close() },
	}, nil
}

// ensureTree finds the tree recorded for this origin, or creates and
// initialises one and records it. A restart therefore reuses the same tree.
// It returns the tree's id and type (LOG or PREORDERED_LOG).
func ensureTree(ctx context.Context, tc *trillianConn, st store, origin string, fixed int64, newType trillian.TreeType, logger *slog.Logger) (int64, trillian.TreeType, error) {
	// Replicas starting together on an empty database must not each create
	// a tree: the first creates it, the others wait and find it.
	unlock, err := st.LockSetup(ctx, origin)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()
	existing := fixed
	if existing == 0 {
		id, err := st.TreeID(ctx, origin)
		if err != nil {
			return 0, 0, err
		}
		existing = id
	}
	if existing != 0 {
		tree, err := tc.admin.GetTree(ctx, &trillian.GetTreeRequest{TreeId: existing})
		if err != nil {
			return 0, 0, fmt.Errorf("trillian tree %d: %w", existing, err)
		}
		if err := initLog(ctx, tc, existing); err != nil {
			return 0, 0, err
		}
		if fixed != 0 {
			if err := st.SetTreeID(ctx, origin, fixed); err != nil {
				return 0, 0, err
			}
		}
		return existing, tree.TreeType, nil
	}
	tree, err := tc.admin.CreateTree(ctx, &trillian.CreateTreeRequest{Tree: &trillian.Tree{
		TreeState:       trillian.TreeState_ACTIVE,
		TreeType:        newType,
		DisplayName:     "carelog",
		Description:     truncate("carelog log "+origin, 200),
		MaxRootDuration: durationpb.New(time.Hour),
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("creating the Trillian tree: %w", err)
	}
	if err := initLog(ctx, tc, tree.TreeId); err != nil {
		return 0, 0, err
	}
	if err := st.SetTreeID(ctx, origin, tree.TreeId); err != nil {
		return 0, 0, err
	}
	logger.Info("created Trillian tree", slog.Int64("tree_id", tree.TreeId), slog.String("origin", origin), slog.String("type", newType.String()))
	return tree.TreeId, newType, nil
}

func initLog(ctx context.Context, tc *trillianConn, id int64) error {
	_, err := tc.log.InitLog(ctx, &trillian.InitLogRequest{LogId: id})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("initialising Trillian tree %d: %w", id, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// openDatabase connects to MariaDB/MySQL, creating the database named in the
// DSN if it does not exist.
func openDatabase(ctx context.Context, dsn string) (*sql.DB, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("MySQL DSN: %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("MySQL DSN names no database (want user@tcp(host:port)/dbname)")
	}
	if !validDBName(cfg.DBName) {
		return nil, fmt.Errorf("MySQL database name %q: use letters, digits and _ only", cfg.DBName)
	}
	server := cfg.Clone()
	server.DBName = ""
	sdb, err := sql.Open("mysql", server.FormatDSN())
	if err != nil {
		return nil, err
	}
	defer sdb.Close()
	if _, err := sdb.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+cfg.DBName+"`"); err != nil {
		return nil, fmt.Errorf("MySQL at %s: creating database %s: %w", cfg.Addr, cfg.DBName, err)
	}
	// Client-side interpolation saves a prepare and a close round trip per
	// statement (a quarter of MariaDB's time under load); the driver
	// escapes every value.
	cfg.InterpolateParams = true
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("MySQL at %s: %w", cfg.Addr, err)
	}
	return db, nil
}

func validDBName(s string) bool {
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return s != ""
}

// provisionTrillianSchema applies Trillian's own MySQL schema when its
// tables are missing. The schema belongs to Trillian: it is read from the
// Trillian module's storage/mysql/schema/storage.sql (path given, or found
// with `go list -m`), never from a copy of ours.
func provisionTrillianSchema(ctx context.Context, db *sql.DB, schemaPath string) error {
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name IN ('Trees','TreeControl','Subtree','TreeHead','LeafData','SequencedLeafData','Unsequenced')`).Scan(&n)
	if err != nil {
		return fmt.Errorf("checking for Trillian's tables: %w", err)
	}
	if n == 7 {
		return nil
	}
	if schemaPath == "" {
		schemaPath, err = TrillianSchemaPath()
		if err != nil {
			return err
		}
	}
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		return fmt.Errorf("reading Trillian's schema: %w", err)
	}
	for _, stmt := range sqlStatements(string(b)) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			var me *gomysql.MySQLError
			if errors.As(err, &me) && me.Number == 1061 { // duplicate index name: already applied
				continue
			}
			return fmt.Errorf("applying Trillian's schema (%s): %w", schemaPath, err)
		}
	}
	return nil
}

// TrillianSchemaPath locates Trillian's MySQL schema in the Go module cache:
// the module of the very Trillian version this binary was built with (from
// its build info), or failing that whatever `go list -m` finds.
func TrillianSchemaPath() (string, error) {
	const rel = "/storage/mysql/schema/storage.sql"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path != "github.com/google/trillian" {
				continue
			}
			if d.Replace != nil {
				d = d.Replace
			}
			out, err := exec.Command("go", "env", "GOMODCACHE").Output()
			if cache := strings.TrimSpace(string(out)); err == nil && cache != "" {
				p := filepath.Join(cache, "github.com/google/trillian@"+d.Version) + rel
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
			}
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/trillian").Output()
	if dir := strings.TrimSpace(string(out)); err == nil && dir != "" {
		return dir + rel, nil
	}
	return "", errors.New("Trillian's tables are missing and its schema was not found: pass --trillian-schema " +
		"with the path of storage/mysql/schema/storage.sql from the Trillian module " +
		"(go list -m -f '{{.Dir}}' github.com/google/trillian, run in the carelog source tree)")
}

// sqlStatements splits a schema file into statements, dropping comments.
func sqlStatements(s string) []string {
	var clean strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		clean.WriteString(line)
		clean.WriteByte('\n')
	}
	var out []string
	for _, st := range strings.Split(clean.String(), ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}
