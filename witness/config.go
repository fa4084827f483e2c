package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Defaults for the zero values of Config.
const (
	DefaultAddr           = "localhost:7380"
	DefaultGossipInterval = time.Minute
	DefaultHTTPTimeout    = 30 * time.Second
	DefaultWebhookTimeout = 10 * time.Second
)

// Config is everything a witness needs. The zero value of an optional field
// means its default.
type Config struct {
	// Addr is the TCP address Run listens on. Default DefaultAddr.
	Addr string
	// Prefix is the path prefix of every endpoint, e.g. "/witness"; empty
	// serves at the root.
	Prefix string
	// StateDir holds the SQLite state database (StateFile). Required.
	StateDir string
	// Key is the witness's Ed25519 note private key ("PRIVATE+KEY+name+…",
	// as written by note.GenerateKey or `carelog-witness keygen`). Its
	// cosignatures are cosignature/v1. Required.
	Key string
	// Logs are the logs the witness cosigns. Required, at least one.
	Logs []LogConfig
	// Peers are the witnesses it gossips with.
	Peers []PeerConfig
	// GossipInterval is how often Run gossips with the peers. Default
	// DefaultGossipInterval; negative disables the gossip loop (GossipOnce
	// still works).
	GossipInterval time.Duration
	// PullInterval is how often Run polls every log that has a URL for its
	// latest checkpoint and advances to it. Zero or negative disables pull
	// mode (PullOnce still works).
	PullInterval time.Duration
	// WebhookURL, if set, receives a POST with the JSON Evidence whenever
	// new split-view evidence is found.
	WebhookURL string
	// WebhookTimeout bounds one webhook POST. Default DefaultWebhookTimeout.
	WebhookTimeout time.Duration
	// HTTPClient makes the outgoing requests (logs, peers, webhook).
	// Default: a client with DefaultHTTPTimeout.
	HTTPClient *http.Client
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// LogConfig is one log the witness cosigns.
type LogConfig struct {
	// Origin is the checkpoint origin line that names the log.
	Origin string `json:"origin"`
	// Key is the log's note verifier key (vkey); Ed25519, or any other
	// signed-note type github.com/transparency-dev/formats/note supports.
	Key string `json:"key"`
	// URL is the log's base URL, for GET <URL>/checkpoint and
	// GET <URL>/proof/consistency (pull mode and gossip). Optional: without
	// it the witness only accepts pushes and detects same-size splits.
	URL string `json:"url,omitempty"`
}

// PeerConfig is one peer witness to gossip with.
type PeerConfig struct {
	// Name is the peer's key name, used in logs and evidence.
	Name string `json:"name"`
	// Key is the peer's cosignature/v1 verifier key (type 0x04, or a plain
	// Ed25519 vkey, which is read as its cosignature/v1 form).
	Key string `json:"key"`
	// URL is the peer's monitoring prefix: the witness fetches
	// <URL>/<hex sha256(origin)>/checkpoint.
	URL string `json:"url"`
}

// ConfigFile is the JSON configuration file of carelog-witness: the logs,
// the peers and the optional evidence webhook.
//
//	{
//	  "logs": [
//	    {"origin": "carelog.example/log", "key": "carelog.example/log+1234abcd+AaBb…", "url": "https://carelog.example/api"}
//	  ],
//	  "peers": [
//	    {"name": "w2.example", "key": "w2.example+5678abcd+BCcD…", "url": "https://w2.example"}
//	  ],
//	  "webhook": "https://alerts.example/carelog"
//	}
type ConfigFile struct {
	Logs    []LogConfig  `json:"logs"`
	Peers   []PeerConfig `json:"peers"`
	Webhook string       `json:"webhook,omitempty"`
}

// LoadConfigFile reads the JSON configuration file at path into cfg's Logs,
// Peers and WebhookURL. Unknown fields are an error, so typos do not pass
// silently.
func LoadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("witness config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f ConfigFile
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("witness config %s: %w", path, err)
	}
	cfg.Logs, cfg.Peers = f.Logs, f.Peers
	if f.Webhook != "" {
		cfg.WebhookURL = f.Webhook
	}
	return nil
}

// ReadKeyFile reads a note private key file, trimming surrounding space.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("witness key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// GenerateKey makes a new witness key named name. It returns the private
// key (to keep in a file only the witness can read) and the cosignature/v1
// verifier key (to give to logs and to put in policy files).
func GenerateKey(name string) (skey, cosigVKey string, err error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("witness key: %w", err)
	}
	cosigVKey, err = fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		return "", "", fmt.Errorf("witness key: %w", err)
	}
	return skey, cosigVKey, nil
}

// CosignatureVKey returns the cosignature/v1 verifier key (type 0x04) that
// belongs to the Ed25519 note private key skey.
func CosignatureVKey(skey string) (string, error) {
	// PRIVATE+KEY+<name>+<hash>+<base64(alg || seed)>
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("witness key: not a note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || (raw[0] != 0x01 && raw[0] != 0x04) {
		return "", errors.New("witness key: not an Ed25519 note private key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", fmt.Errorf("witness key: %w", err)
	}
	return fnote.VKeyToCosignatureV1(vkey)
}

// withDefaults checks cfg and fills in the defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	cfg.Prefix = strings.TrimSuffix(cfg.Prefix, "/")
	if cfg.Prefix != "" && !strings.HasPrefix(cfg.Prefix, "/") {
		return cfg, fmt.Errorf("witness config: prefix %q must start with /", cfg.Prefix)
	}
	if cfg.StateDir == "" {
		return cfg, errors.New("witness config: no state directory")
	}
	if cfg.Key == "" {
		return cfg, errors.New("witness config: no key")
	}
	if len(cfg.Logs) == 0 {
		return cfg, errors.New("witness config: no logs")
	}
	if cfg.GossipInterval == 0 {
		cfg.GossipInterval = DefaultGossipInterval
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = DefaultWebhookTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WebhookURL != "" {
		if err := checkURL(cfg.WebhookURL); err != nil {
			return cfg, fmt.Errorf("witness config: webhook: %w", err)
		}
	}
	return cfg, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}
