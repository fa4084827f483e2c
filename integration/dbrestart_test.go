package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/client"
)

// privateMariaDB starts a MariaDB of the test's own (scripts/mariadb.sh in
// a temporary directory, on a free port), so the test can stop and start
// it. It returns the server DSN and a restart function.
func privateMariaDB(t *testing.T) (dsn string, stop, startAgain func()) {
	t.Helper()
	if _, err := exec.LookPath("mariadbd"); err != nil {
		if _, err := os.Stat("/usr/sbin/mariadbd"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("mariadbd is not installed; scripts/mariadb.sh installs it")
			}
			t.Skip("mariadbd is not installed")
		}
	}
	dir := t.TempDir()
	port := fmt.Sprint(33000 + os.Getpid()%2000)
	script, _ := filepath.Abs("../scripts/mariadb.sh")
	run := func() string {
		cmd := exec.Command(script, "root@tcp(127.0.0.1:1)/")
		cmd.Env = append(os.Environ(), "CARELOG_MARIADB_DIR="+dir, "CARELOG_MARIADB_PORT="+port)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("starting a private MariaDB: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	stop = func() {
		cmd := exec.Command(script, "stop")
		cmd.Env = append(os.Environ(), "CARELOG_MARIADB_DIR="+dir)
		_ = cmd.Run()
		// Wait until the port is free.
		waitFor(t, "MariaDB to stop", time.Minute, func() (bool, error) {
			return exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port).Run() != nil, nil
		})
	}
	dsn = run()
	t.Cleanup(stop)
	return dsn, stop, func() { run() }
}

// TestDatabaseRestartUnderLoad restarts the log's MariaDB in the middle of
// a load: submissions fail with 503 while it is down (nothing stored, the
// client retries), and afterwards every acknowledged entry is in the tree
// exactly once, with no gap.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	server, stopDB, startDB := privateMariaDB(t)
	dsn := strings.TrimSuffix(server, "/") + "/carelog_restart"
	k := newKeyset(t)
	lg := startLog(t, k, dsn, "--lease-ttl", "2s")
	c := logClient(t, lg.url(), k.logVKey)
	entries := signedEntries(t, k, 31, 3000)

	done := make(chan *loadResult, 1)
	go func() { done <- runLoad(ctx, t, func() []*client.Log { return []*client.Log{c} }, entries, 16) }()
	waitFor(t, "some entries in the tree", time.Minute, func() (bool, error) {
		n, err := logSize(lg.url())
		return n > 300, err
	})
	stopDB()
	time.Sleep(2 * time.Second) // let the load hit the dead database for a while
	startDB()
	res := <-done
	if len(res.acked) != len(entries) {
		t.Fatalf("%d of %d entries acknowledged", len(res.acked), len(entries))
	}
	checkTree(t, ctx, c, res)
}
