package bench

import (
	"context"
	"database/sql"
	"strconv"
)

// serverStatusVars are the MariaDB/MySQL counters the harness reads to
// show how much database work one entry costs.
var serverStatusVars = []string{
	"Questions", "Com_select", "Com_insert", "Com_update", "Com_delete", "Com_commit",
	"Com_stmt_prepare", "Com_stmt_execute", "Com_stmt_close",
	"Innodb_rows_inserted", "Innodb_rows_read", "Innodb_data_fsyncs", "Innodb_data_written", "Innodb_data_reads", "Innodb_buffer_pool_reads", "Innodb_buffer_pool_read_requests", "Innodb_buffer_pool_wait_free", "Innodb_row_lock_time", "Innodb_row_lock_waits", "Bytes_received",
}

// ServerStatus is a snapshot of the server's global status counters (for
// the whole server: other clients' work counts too).
type ServerStatus map[string]uint64

// ReadServerStatus reads the counters in serverStatusVars.
func ReadServerStatus(ctx context.Context, db *sql.DB) (ServerStatus, error) {
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	want := map[string]bool{}
	for _, v := range serverStatusVars {
		want[v] = true
	}
	st := ServerStatus{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		if want[k] {
			st[k], _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return st, rows.Err()
}

// Per divides the growth of each counter from s to later by n.
func (s ServerStatus) Per(later ServerStatus, n int64) map[string]float64 {
	out := map[string]float64{}
	if n <= 0 {
		return out
	}
	for k, v := range later {
		out[k] = float64(v-s[k]) / float64(n)
	}
	return out
}
