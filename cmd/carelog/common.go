package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/client"
	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

// exitError carries a specific exit code: 1 for usage and operational
// errors, 3 for a verification failure (the log's word did not check out).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func asExit(err error, target *exitError) bool { return errors.As(err, target) }

// verificationFailed marks err as a failed verification (exit code 3).
func verificationFailed(err error) error { return exitError{code: 3, err: err} }

// logFlags are the flags that say which log to trust and how.
type logFlags struct {
	url, key, policy string
	noWitnesses      bool
}

func (lf *logFlags) register(fs *flag.FlagSet, needURL bool) {
	if needURL {
		fs.StringVar(&lf.url, "log", "http://127.0.0.1:8080", "the log's base URL")
	}
	fs.StringVar(&lf.key, "log-key", "", "the log's verifier key, or a file holding it (required)")
	fs.StringVar(&lf.policy, "policy", "", "witness policy file checkpoints must meet (required, or --no-witnesses)")
	fs.BoolVar(&lf.noWitnesses, "no-witnesses", false, "check the log's signature only, for a log run without witnesses")
}

func (lf *logFlags) client() (*client.Log, error) {
	if lf.key == "" {
		return nil, errors.New("--log-key is required (the log's vkey, or a file holding it)")
	}
	vkey, err := keyOrFile(lf.key)
	if err != nil {
		return nil, err
	}
	var p *checkpoint.Policy
	switch {
	case lf.policy == "" && !lf.noWitnesses:
		return nil, errors.New("--policy FILE is required (the witness policy checkpoints must meet); " +
			"--no-witnesses checks the log's signature only, for a log run without witnesses")
	case lf.policy == "":
		p = checkpoint.NoWitnesses()
	default:
		b, err := os.ReadFile(lf.policy)
		if err != nil {
			return nil, err
		}
		if p, err = checkpoint.ParsePolicy(b); err != nil {
			return nil, fmt.Errorf("%s: %w", lf.policy, err)
		}
	}
	url := lf.url
	if url == "" {
		url = "http://offline.invalid"
	}
	return client.New(client.Config{URL: url, LogKey: vkey, Policy: p})
}

// keyOrFile returns s if it looks like a key, else the trimmed content of
// the file s names.
func keyOrFile(s string) (string, error) {
	if strings.Count(s, "+") >= 2 && !strings.ContainsAny(s, "/\\") || strings.HasPrefix(s, "PRIVATE+KEY+") {
		return strings.TrimSpace(s), nil
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return "", fmt.Errorf("key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// policyNote says what the witness policy check amounted to.
func policyNote(c *client.Log) string {
	if n := len(c.Policy().Witnesses()); n > 0 {
		return fmt.Sprintf("witness policy met (%d witnesses named)", n)
	}
	return "no witness policy given: checked the log's signature only"
}

// submitterSigner loads a submitter's private key (or a file holding it).
func submitterSigner(keyOrPath string) (note.Signer, error) {
	skey, err := keyOrFile(keyOrPath)
	if err != nil {
		return nil, err
	}
	s, err := submitter.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("submitter key: %w", err)
	}
	return s, nil
}
