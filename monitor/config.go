package monitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/submitter"
)

// Config is everything a Monitor needs, as values. LoadConfig builds one
// from the JSON config file; tests build one directly.
type Config struct {
	// Logs to follow and replay. At least one.
	Logs []LogConfig
	// Witnesses whose monitoring endpoints are polled for every log.
	Witnesses []WitnessConfig
	// Peers are other monitors serving the checkpoints they verified at the
	// same endpoint shape as witnesses.
	Peers []PeerConfig
	// Submitters is the submitter registry entries are checked against.
	Submitters *submitter.Registry

	// StateDir holds the SQLite state (monitor.db). Required.
	StateDir string
	// PromiseDir, if set, is scanned each pass for promise files.
	PromiseDir string
	// MergeDelay is the log's maximum merge delay: a promise whose entry is
	// not in the log by its acceptance time plus MergeDelay is broken.
	MergeDelay time.Duration
	// StaleAfter, if positive, is the age beyond which the log's checkpoint
	// counts as stale (see the stale-log alert).
	StaleAfter time.Duration
	// PollInterval is how often Run polls the log, witnesses and peers.
	PollInterval time.Duration

	// Rules are the health-care watch rules.
	Rules Rules

	// WebhookURL, if set, receives every alert as a JSON POST.
	WebhookURL string
	// WebhookMinBackoff and WebhookMaxBackoff bound the retry delay of a
	// failed delivery; it doubles from the first to the second.
	WebhookMinBackoff, WebhookMaxBackoff time.Duration
	// OnceDeliveryTimeout bounds how long RunOnce keeps retrying deliveries
	// at the end of its pass; what is left stays in the outbox.
	OnceDeliveryTimeout time.Duration

	// BatchSize is the number of entries per GET /entries (at most 1000).
	BatchSize int
	// Workers is how many batches are fetched and verified in parallel.
	Workers int

	// ListenAddr, if set, is where Run serves /status, /alerts, /metrics,
	// POST /promises and the peer checkpoint endpoint.
	ListenAddr string
	// CosignKey, if set, is a private note key (Ed25519) with which the
	// monitor adds a cosignature/v1 to the checkpoints it serves to peers.
	CosignKey string

	// Now is the clock for merge delays and staleness; time.Now if nil.
	Now func() time.Time
	// HTTPClient talks to logs, witnesses, peers and the webhook; a client
	// with a 30 s timeout if nil.
	HTTPClient *http.Client
	// Logger receives structured logs; slog.Default() if nil.
	Logger *slog.Logger
}

// LogConfig names one log and how to trust it.
type LogConfig struct {
	// URL is the log's base URL, including any path prefix.
	URL string `json:"url"`
	// Origin is the log's origin line; defaults to the key's name.
	Origin string `json:"origin"`
	// VKey is the log's note verifier key.
	VKey string `json:"vkey"`
	// Policy is the witness policy the log's own checkpoint must meet; nil
	// means none.
	Policy *checkpoint.Policy `json:"-"`
}

// WitnessConfig names one witness: its cosignature/v1 verifier key and base
// URL. The monitor reads GET <URL>/<hex sha256(origin)>/checkpoint.
type WitnessConfig struct {
	Name string `json:"name"`
	VKey string `json:"vkey"`
	URL  string `json:"url"`
}

// PeerConfig names a peer monitor. If VKey is set, the peer's checkpoints
// must carry its cosignature/v1; the log's signature is always required.
type PeerConfig struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	VKey string `json:"vkey,omitempty"`
}

// Rules are the health-care watch rules applied to every replayed entry.
// Their alerts are of class "watch": they report accesses to look at, not
// tampering with the log. The zero value turns every rule off; LoadConfig
// turns Emergency and KeyValidity on unless the file says otherwise.
type Rules struct {
	// Emergency alerts on every break-glass event and every emergency
	// purpose of use (entry.EmergencyPurposes: ETREAT, BTG).
	Emergency bool
	// WatchedPatients are patient pseudonyms any access to which alerts.
	WatchedPatients []string
	// Snooping alerts when one actor touches more than MaxPatients distinct
	// patients within Window (by event time). Off when either is zero.
	Snooping SnoopingRule
	// KeyValidity alerts on entries whose submitter key was outside its
	// validity window at the event's time.
	KeyValidity bool
}

// SnoopingRule is the "too many patients" rule.
type SnoopingRule struct {
	MaxPatients int
	Window      time.Duration
}

func (c *Config) setDefaults() {
	if c.MergeDelay <= 0 {
		c.MergeDelay = 10 * time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 10 * time.Second
	}
	if c.WebhookMinBackoff <= 0 {
		c.WebhookMinBackoff = time.Second
	}
	if c.WebhookMaxBackoff < c.WebhookMinBackoff {
		c.WebhookMaxBackoff = max(5*time.Minute, c.WebhookMinBackoff)
	}
	if c.OnceDeliveryTimeout <= 0 {
		c.OnceDeliveryTimeout = 30 * time.Second
	}
	if c.BatchSize <= 0 || c.BatchSize > 1000 {
		c.BatchSize = 1000
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Duration is a time.Duration written as a Go duration string ("90s") in
// the config file.
type Duration time.Duration

// UnmarshalJSON reads "1m30s"-style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`durations are strings such as "90s" or "10m"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// File is the JSON config file's shape. Relative paths are relative to the
// file's directory. See docs/monitor.md for an example.
type File struct {
	StateDir string `json:"state_dir"`
	Listen   string `json:"listen,omitempty"`
	Logs     []struct {
		LogConfig
		// PolicyFile is the witness policy (tlog-policy syntax); empty for none.
		PolicyFile string `json:"policy_file,omitempty"`
	} `json:"logs"`
	Witnesses      []WitnessConfig `json:"witnesses,omitempty"`
	Peers          []PeerConfig    `json:"peers,omitempty"`
	SubmittersFile string          `json:"submitters_file"`
	PromiseDir     string          `json:"promise_dir,omitempty"`
	MergeDelay     Duration        `json:"merge_delay,omitempty"`
	StaleAfter     Duration        `json:"stale_after,omitempty"`
	PollInterval   Duration        `json:"poll_interval,omitempty"`
	Rules          struct {
		// Emergency and KeyValidity default to true.
		Emergency       *bool    `json:"emergency,omitempty"`
		WatchedPatients []string `json:"watched_patients,omitempty"`
		Snooping        struct {
			MaxPatients int      `json:"max_patients"`
			Window      Duration `json:"window"`
		} `json:"snooping"`
		KeyValidity *bool `json:"key_validity,omitempty"`
	} `json:"rules"`
	Webhook struct {
		URL        string   `json:"url"`
		MinBackoff Duration `json:"min_backoff,omitempty"`
		MaxBackoff Duration `json:"max_backoff,omitempty"`
	} `json:"webhook"`
	Replay struct {
		BatchSize int `json:"batch_size,omitempty"`
		Workers   int `json:"workers,omitempty"`
	} `json:"replay"`
	CosignKeyFile string `json:"cosign_key_file,omitempty"`
}

// LoadConfig reads a config file and the files it names (policies, the
// submitter registry, the cosigning key). Unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("monitor config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return Config{}, fmt.Errorf("monitor config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cfg := Config{
		Witnesses:         f.Witnesses,
		Peers:             f.Peers,
		StateDir:          rel(f.StateDir),
		PromiseDir:        rel(f.PromiseDir),
		MergeDelay:        time.Duration(f.MergeDelay),
		StaleAfter:        time.Duration(f.StaleAfter),
		PollInterval:      time.Duration(f.PollInterval),
		WebhookURL:        f.Webhook.URL,
		WebhookMinBackoff: time.Duration(f.Webhook.MinBackoff),
		WebhookMaxBackoff: time.Duration(f.Webhook.MaxBackoff),
		BatchSize:         f.Replay.BatchSize,
		Workers:           f.Replay.Workers,
		ListenAddr:        f.Listen,
		Rules: Rules{
			Emergency:       f.Rules.Emergency == nil || *f.Rules.Emergency,
			WatchedPatients: f.Rules.WatchedPatients,
			Snooping:        SnoopingRule{MaxPatients: f.Rules.Snooping.MaxPatients, Window: time.Duration(f.Rules.Snooping.Window)},
			KeyValidity:     f.Rules.KeyValidity == nil || *f.Rules.KeyValidity,
		},
	}
	for i, l := range f.Logs {
		lc := l.LogConfig
		if l.PolicyFile != "" {
			pb, err := os.ReadFile(rel(l.PolicyFile))
			if err != nil {
				return Config{}, fmt.Errorf("monitor config: logs[%d]: %w", i, err)
			}
			if lc.Policy, err = checkpoint.ParsePolicy(pb); err != nil {
				return Config{}, fmt.Errorf("monitor config: logs[%d]: %w", i, err)
			}
		}
		cfg.Logs = append(cfg.Logs, lc)
	}
	if f.SubmittersFile == "" {
		return Config{}, errors.New("monitor config: submitters_file is required")
	}
	if cfg.Submitters, err = submitter.Load(rel(f.SubmittersFile)); err != nil {
		return Config{}, fmt.Errorf("monitor config: %w", err)
	}
	if f.CosignKeyFile != "" {
		k, err := os.ReadFile(rel(f.CosignKeyFile))
		if err != nil {
			return Config{}, fmt.Errorf("monitor config: cosign_key_file: %w", err)
		}
		cfg.CosignKey = strings.TrimSpace(string(k))
	}
	return cfg, nil
}
