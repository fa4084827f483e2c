package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/carelog/carelog/demo"
	_ "github.com/go-sql-driver/mysql"
)

func cmdDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for keys, configs, state and logs (default: a fresh temporary one)")
	mysql := fs.String("mysql", "", "MariaDB/MySQL DSN for the log (default: Trillian's memory storage, nothing kept)")
	rate := fs.Float64("rate", 5, "events per second from the simulated EHR")
	attack := fs.String("attack", "", "stage an attack and exit 0 only if it is detected: split-view or rewrite (rewrite needs --mysql)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "carelog-demo-")
		if err != nil {
			return err
		}
		*dir = d
	}
	err := demo.Run(ctx, demo.Config{Dir: *dir, MySQLDSN: *mysql, Rate: *rate, Attack: *attack, Out: os.Stdout})
	if err != nil && *attack != "" {
		fmt.Fprintf(os.Stderr, "carelog demo: logs in %s\n", *dir)
		return verificationFailed(err)
	}
	return err
}
