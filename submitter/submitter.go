// Package submitter is the registry of systems allowed to write to the log:
// each has a name and one or more note verifier keys, each key with an
// optional validity window. Ed25519 keys (note type 0x01) are required of
// every deployment; ECDSA P-256 keys (type 0x02, as in
// github.com/transparency-dev/formats/note) suit HSM- or PKI-backed systems.
//
// The registry file is JSON:
//
//	{"submitters": [
//	  {"name": "ehr.example-hospital.org",
//	   "keys": [{"vkey": "ehr.example-hospital.org+1a2b3c4d+AW...",
//	             "not_before": "2026-01-01T00:00:00Z",
//	             "not_after":  "2027-01-01T00:00:00Z"}]}
//	]}
//
// A key's name must equal its submitter's name: the name in the signature
// line is how an entry says who sent it.
package submitter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// Errors a caller maps to 403.
var (
	ErrUnknownKey  = errors.New("unknown submitter key")
	ErrKeyNotValid = errors.New("submitter key not valid at this time")
)

// File is the registry file's shape.
type File struct {
	Submitters []Submitter `json:"submitters"`
}

// Submitter is one registered system.
type Submitter struct {
	Name string `json:"name"`
	Keys []Key  `json:"keys"`
}

// Key is a note verifier key with an optional validity window.
type Key struct {
	VKey      string     `json:"vkey"`
	NotBefore *time.Time `json:"not_before,omitempty"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
}

type keyID struct {
	name string
	hash uint32
}

// Registry answers which keys may sign entries, and when.
type Registry struct {
	keys      map[keyID]Key
	verifiers []note.Verifier
	names     map[string]bool
}

// Load reads a registry file.
func Load(path string) (*Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("submitter registry: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("submitter registry %s: %w", path, err)
	}
	return r, nil
}

// Parse reads a registry from its JSON text. Unknown fields are errors, so a
// misspelt "not_after" cannot silently leave a key valid forever.
func Parse(b []byte) (*Registry, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return New(f.Submitters)
}

// New builds a registry from submitter records.
func New(subs []Submitter) (*Registry, error) {
	r := &Registry{keys: map[keyID]Key{}, names: map[string]bool{}}
	for i, s := range subs {
		if s.Name == "" {
			return nil, fmt.Errorf("submitters[%d]: name is empty", i)
		}
		if r.names[s.Name] {
			return nil, fmt.Errorf("submitters[%d]: name %q registered twice", i, s.Name)
		}
		r.names[s.Name] = true
		if len(s.Keys) == 0 {
			return nil, fmt.Errorf("submitter %q: no keys", s.Name)
		}
		for j, k := range s.Keys {
			v, err := NewVerifier(k.VKey)
			if err != nil {
				return nil, fmt.Errorf("submitter %q keys[%d]: %w", s.Name, j, err)
			}
			if v.Name() != s.Name {
				return nil, fmt.Errorf("submitter %q keys[%d]: key is named %q; a submitter's keys must carry its name", s.Name, j, v.Name())
			}
			if k.NotBefore != nil && k.NotAfter != nil && !k.NotAfter.After(*k.NotBefore) {
				return nil, fmt.Errorf("submitter %q keys[%d]: not_after is not after not_before", s.Name, j)
			}
			id := keyID{v.Name(), v.KeyHash()}
			if _, dup := r.keys[id]; dup {
				return nil, fmt.Errorf("submitter %q keys[%d]: key listed twice", s.Name, j)
			}
			r.keys[id] = k
			r.verifiers = append(r.verifiers, v)
		}
	}
	return r, nil
}

// Verifiers returns every registered key's verifier, for note.Open.
func (r *Registry) Verifiers() note.Verifiers {
	return note.VerifierList(r.verifiers...)
}

// Known reports whether name is a registered submitter.
func (r *Registry) Known(name string) bool { return r.names[name] }

// ValidAt checks that the key (name, hash) is registered and inside its
// validity window at time t.
func (r *Registry) ValidAt(name string, hash uint32, t time.Time) error {
	k, ok := r.keys[keyID{name, hash}]
	if !ok {
		return ErrUnknownKey
	}
	if k.NotBefore != nil && t.Before(*k.NotBefore) {
		return fmt.Errorf("%w: key of %q is valid from %s", ErrKeyNotValid, name, k.NotBefore.UTC().Format(time.RFC3339))
	}
	if k.NotAfter != nil && !t.Before(*k.NotAfter) {
		return fmt.Errorf("%w: key of %q expired at %s", ErrKeyNotValid, name, k.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// NewVerifier parses a submitter's verifier key: Ed25519 (type 0x01) or
// ECDSA P-256 with SHA-256 (type 0x02). Other types are refused.
func NewVerifier(vkey string) (note.Verifier, error) {
	alg, err := keyType(vkey, 3)
	if err != nil {
		return nil, err
	}
	switch alg {
	case algEd25519:
		return note.NewVerifier(vkey)
	case algECDSA:
		v, err := fnote.NewECDSAVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("ECDSA key: %w", err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("key type 0x%02x is not accepted for submitters (want Ed25519 0x01 or ECDSA P-256 0x02)", alg)
}

const (
	algEd25519 = 0x01
	algECDSA   = 0x02
)

// keyType returns the algorithm byte of a note key string whose base64 key
// material is its parts-th '+'-separated field.
func keyType(key string, parts int) (byte, error) {
	f := strings.SplitN(key, "+", parts)
	if len(f) != parts {
		return 0, errors.New("malformed key: want name+hash+key")
	}
	b, err := decodeB64(f[parts-1])
	if err != nil || len(b) < 2 {
		return 0, errors.New("malformed key: bad base64 key material")
	}
	return b[0], nil
}
