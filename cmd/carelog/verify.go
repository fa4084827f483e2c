package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
)

func cmdCheckpoint(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("checkpoint", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	raw, err := c.RawCheckpoint(ctx)
	if err != nil {
		return err
	}
	cp, err := c.OpenCheckpoint(raw)
	if err != nil {
		return verificationFailed(err)
	}
	fmt.Print(string(raw))
	fmt.Fprintf(os.Stderr, "verified: size %d, signed by %s, %s\n", cp.Size, cp.Origin, policyNote(c))
	return nil
}

func cmdVerify(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: carelog verify inclusion|bundle|consistency [flags]")
	}
	switch args[0] {
	case "inclusion":
		return verifyInclusion(ctx, args[1:])
	case "bundle":
		return verifyBundle(args[1:])
	case "consistency":
		return verifyConsistency(ctx, args[1:])
	}
	return fmt.Errorf("unknown verification %q: want inclusion, bundle or consistency", args[0])
}

func verifyInclusion(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify inclusion", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	entryFile := fs.String("entry", "", "file with the signed entry as submitted")
	hash := fs.String("hash", "", "the entry's leaf hash (base64url), instead of --entry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	var leafHash []byte
	switch {
	case *entryFile != "":
		b, err := os.ReadFile(*entryFile)
		if err != nil {
			return err
		}
		leafHash = checkpoint.LeafHash(b)
	case *hash != "":
		leafHash, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(*hash, "="))
		if err != nil || len(leafHash) != 32 {
			return errors.New("--hash must be a base64url SHA-256 leaf hash")
		}
	default:
		return errors.New("give --entry FILE or --hash LEAFHASH")
	}
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		return verificationFailed(err)
	}
	idx, err := c.VerifyInclusion(ctx, leafHash, cp.Checkpoint)
	if err != nil {
		return verificationFailed(err)
	}
	fmt.Printf("OK: entry is at index %d in the log's tree of size %d (checkpoint signed by %s, %s)\n", idx, cp.Size, cp.Origin, policyNote(c))
	return nil
}

func verifyBundle(args []string) error {
	fs := flag.NewFlagSet("verify bundle", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, false)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: carelog verify bundle --log-key KEY [--policy FILE] BUNDLE")
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	v, err := c.OpenBundle(b)
	if err != nil {
		return verificationFailed(err)
	}
	fmt.Printf("OK: offline proof verified: index %d in tree of size %d of %s\n", v.Index, v.Checkpoint.Size, v.Checkpoint.Origin)
	fmt.Printf("entry: %s\n", entry.Text(v.Entry))
	return nil
}

func verifyConsistency(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify consistency", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return errors.New("usage: carelog verify consistency --log URL --log-key KEY OLD_CHECKPOINT [NEW_CHECKPOINT] (default new: the log's current one)")
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	read := func(path string) (*checkpoint.Signed, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		// The old checkpoint may predate the current policy's witnesses:
		// the log signature is what binds it.
		cp, err := checkpoint.Open(b, c.Origin(), c.Verifier())
		if err != nil {
			return nil, verificationFailed(fmt.Errorf("%s: %w", path, err))
		}
		return cp, nil
	}
	older, err := read(fs.Arg(0))
	if err != nil {
		return err
	}
	var newer *checkpoint.Signed
	if fs.NArg() == 2 {
		newer, err = read(fs.Arg(1))
	} else {
		newer, err = c.Checkpoint(ctx)
		if err != nil {
			err = verificationFailed(err)
		}
	}
	if err != nil {
		return err
	}
	if newer.Size < older.Size {
		older, newer = newer, older
	}
	if err := c.VerifyConsistency(ctx, older.Checkpoint, newer.Checkpoint); err != nil {
		if errors.Is(err, checkpoint.ErrInconsistent) || errors.Is(err, checkpoint.ErrSameSizeNewRoot) {
			return verificationFailed(fmt.Errorf("SPLIT VIEW OR REWRITE: %w", err))
		}
		return err
	}
	fmt.Printf("OK: the tree of size %d is a prefix of the tree of size %d\n", older.Size, newer.Size)
	return nil
}
