// Command healthcheck is the container health check of the carelog and
// Trillian images, which are distroless and so have no curl or wget:
//
//	healthcheck http://127.0.0.1:8080/healthz
//
// It exits 0 if a GET of the URL answers 200 within five seconds, and 1
// otherwise, saying why on stderr.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck URL")
		os.Exit(2)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "healthcheck: %s answered %s: %s\n", os.Args[1], resp.Status, body)
		os.Exit(1)
	}
}
