package personality

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/submitter"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Config is everything a log needs. Zero values take the documented defaults
// (see Defaults).
type Config struct {
	// Signer is the log's Ed25519 note key; its name is the origin.
	// Verifier is its public half (LoadKey returns both).
	Signer   note.Signer
	Verifier note.Verifier
	// Submitters is the registry of systems allowed to submit.
	Submitters *submitter.Registry
	// Policy is the witness policy /checkpoint must meet (nil: none).
	Policy *checkpoint.Policy

	// MySQLDSN is the MariaDB/MySQL database for Trillian (in-process mode)
	// and the personality's own tables, e.g. root@tcp(127.0.0.1:3306)/carelog.
	MySQLDSN string
	// Memory runs Trillian on its memory storage: a try-out that keeps
	// nothing. Only used when MySQLDSN is empty.
	Memory bool
	// TrillianLogAddr, if set, is an external Trillian log server (host:port);
	// the personality then runs no Trillian of its own.
	TrillianLogAddr string
	// TrillianAdminAddr is the external admin server; defaults to TrillianLogAddr.
	TrillianAdminAddr string
	// TreeID pins an existing Trillian tree; 0 creates (once) and reuses one.
	TreeID int64
	// TrillianSchema is the path of Trillian's storage.sql; empty finds it
	// in the Go module cache.
	TrillianSchema string

	// SequencerInterval and SequencerBatch tune the in-process sequencer.
	SequencerInterval time.Duration
	SequencerBatch    int
	// Sequencing is "batched" (the log assigns indices and writes
	// PREORDERED_LOG trees with AddSequencedLeaves; the default) or
	// "trillian" (QueueLeaf, Trillian's sequencer assigns indices; always
	// used in memory mode). It applies to trees created from now on: an
	// existing tree keeps the mode of its type.
	Sequencing string
	// BatchDelay is how long the batched sequencer waits to fill a batch.
	BatchDelay time.Duration
	// LeaseTTL is the sequencer lease's lifetime; a replica that stops
	// renewing loses it after this long.
	LeaseTTL time.Duration
	// CheckpointInterval is how often a new checkpoint is signed if the
	// tree grew.
	CheckpointInterval time.Duration
	// MaxMergeDelay is what the log promises: an accepted entry is in a
	// signed checkpoint within this time.
	MaxMergeDelay time.Duration
	// RateLimit is entries per second per submitter (0: unlimited), with
	// bursts of RateBurst.
	RateLimit float64
	RateBurst int

	// WitnessTimeout bounds one exchange with a witness; WitnessRetry is how
	// often a checkpoint that does not yet meet the policy is pushed again.
	WitnessTimeout time.Duration
	WitnessRetry   time.Duration

	// Listen is the HTTP address; Prefix the path prefix of every route.
	Listen string
	Prefix string
	// GRPCListen is the gRPC address for EHR systems ("" = off).
	GRPCListen string

	Logger *slog.Logger
}

// Defaults fills in zero fields.
func (c *Config) Defaults() {
	if c.SequencerInterval == 0 {
		c.SequencerInterval = 100 * time.Millisecond
	}
	if c.SequencerBatch == 0 {
		c.SequencerBatch = 1000
	}
	if c.Sequencing == "" {
		c.Sequencing = "batched"
	}
	if c.BatchDelay == 0 {
		c.BatchDelay = 5 * time.Millisecond
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.MaxMergeDelay == 0 {
		c.MaxMergeDelay = time.Minute
	}
	if c.WitnessTimeout == 0 {
		c.WitnessTimeout = 5 * time.Second
	}
	if c.WitnessRetry == 0 {
		c.WitnessRetry = 3 * time.Second
	}
	if c.RateBurst == 0 {
		c.RateBurst = 100
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Prefix = strings.TrimRight(c.Prefix, "/")
}

func (c *Config) validate() error {
	if c.Signer == nil || c.Verifier == nil {
		return errors.New("a log signing key and its verifier are required")
	}
	if c.Signer.Name() != c.Verifier.Name() || c.Signer.KeyHash() != c.Verifier.KeyHash() {
		return errors.New("the log's verifier key is not the signing key's")
	}
	if c.Submitters == nil {
		return errors.New("a submitter registry is required")
	}
	if c.MySQLDSN == "" && !c.Memory && c.TrillianLogAddr == "" {
		return errors.New("choose storage: a MySQL DSN, external Trillian servers, or the memory try-out mode")
	}
	if c.TrillianLogAddr != "" && c.MySQLDSN == "" {
		return errors.New("external Trillian still needs a MySQL DSN for carelog's own tables")
	}
	if c.Sequencing != "batched" && c.Sequencing != "trillian" {
		return fmt.Errorf("sequencing %q: want batched or trillian", c.Sequencing)
	}
	if c.Prefix != "" && !strings.HasPrefix(c.Prefix, "/") {
		return fmt.Errorf("prefix %q must start with /", c.Prefix)
	}
	return nil
}

// LoadKey reads the log's Ed25519 note private key from a file and returns
// its signer and verifier.
func LoadKey(path string) (note.Signer, note.Verifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("log key: %w", err)
	}
	s, v, err := fnote.NewEd25519SignerVerifier(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, nil, fmt.Errorf("log key %s: %w (want an Ed25519 note private key, as `carelog keygen --role log` writes)", path, err)
	}
	return s, v, nil
}
