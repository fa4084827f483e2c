package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/carelog/carelog/ehrsim"
	"github.com/carelog/carelog/entry"
	"github.com/google/uuid"
)

func cmdExampleEvent(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("example-event", flag.ContinueOnError)
	system := fs.String("system", "ehr.example-hospital.org", "the submitting system (your submitter name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	g := ehrsim.New(*system, uint64(time.Now().UnixNano()))
	var e *entry.Event
	for e == nil || e.Event != "read" {
		e = g.Next(time.Now())
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(e)
}

func cmdSubmit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	keyFile := fs.String("key", "", "the submitter's private key file (required)")
	wait := fs.Duration("wait", 0, "wait up to this long for inclusion in a verified checkpoint, e.g. 30s")
	bundle := fs.String("bundle", "", "with --wait: write the offline proof bundle (C2SP tlog-proof) to this file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: carelog submit --log URL --log-key KEY --key FILE [--wait 30s] EVENT.json|-")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *keyFile == "" {
		fs.Usage()
		return errors.New("need --key and one event file (or - for stdin)")
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	signer, err := submitterSigner(*keyFile)
	if err != nil {
		return err
	}
	var in []byte
	if fs.Arg(0) == "-" {
		in, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	} else {
		in, err = os.ReadFile(fs.Arg(0))
	}
	if err != nil {
		return err
	}
	var ev entry.Event
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	// Conveniences for people typing events by hand.
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time == "" {
		ev.Time = time.Now().UTC().Format(time.RFC3339)
	}
	if ev.V == 0 {
		ev.V = entry.Version
	}
	signed, err := entry.Sign(&ev, signer)
	if err != nil {
		return err
	}
	res, err := c.Submit(ctx, signed)
	if err != nil {
		return err
	}
	out := map[string]any{"id": ev.ID, "leaf_hash": base64.URLEncoding.EncodeToString(res.LeafHash), "promise": res.Promise}
	if res.Sequenced {
		out["index"] = res.Index
	}
	if *wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		inc, err := c.WaitForInclusion(wctx, res.LeafHash, 250*time.Millisecond)
		if err != nil {
			return err
		}
		out["index"] = inc.Index
		out["checkpoint_size"] = inc.Checkpoint.Size
		out["verified"] = "inclusion proof checked against a checkpoint signed by the log; " + policyNote(c)
		if *bundle != "" {
			b, err := c.ProofBundle(wctx, res.LeafHash)
			if err != nil {
				return err
			}
			if _, err := c.OpenBundle(b); err != nil {
				return verificationFailed(err)
			}
			if err := os.WriteFile(*bundle, b, 0o644); err != nil {
				return err
			}
			out["bundle"] = *bundle
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
