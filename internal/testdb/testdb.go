// Package testdb gives tests a fresh MariaDB/MySQL database of their own.
//
// The server comes from CARELOG_TEST_MYSQL, a DSN without a database name
// (default root@tcp(127.0.0.1:3306)/). scripts/test.sh starts a private
// MariaDB when none answers there. When no server answers, tests skip, except
// under CI=true, where a missing database is a failure.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultServer is the MariaDB/MySQL server tests use unless
// CARELOG_TEST_MYSQL says otherwise.
const DefaultServer = "root@tcp(127.0.0.1:3306)/"

// Server returns the DSN of the test server (no database name).
func Server() string {
	if s := os.Getenv("CARELOG_TEST_MYSQL"); s != "" {
		return s
	}
	return DefaultServer
}

// New creates an empty database for the test, dropped when it ends, and
// returns its DSN.
func New(t testing.TB) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(Server())
	if err != nil {
		t.Fatalf("CARELOG_TEST_MYSQL: %v", err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no MariaDB/MySQL at %s (CI=true makes this a failure): %v", cfg.Addr, err)
		}
		t.Skipf("no MariaDB/MySQL at %s; run scripts/test.sh, which starts one: %v", cfg.Addr, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "carelog_t_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("CARELOG_KEEP_TEST_DB") != "" {
			t.Logf("keeping test database %s", name)
			return
		}
		db, err := sql.Open("mysql", cfg.FormatDSN())
		if err == nil {
			_, _ = db.Exec("DROP DATABASE IF EXISTS " + name)
			db.Close()
		}
	})
	c := cfg.Clone()
	c.DBName = name
	return c.FormatDSN()
}
