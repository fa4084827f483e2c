package checkpoint

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/transparency-dev/formats/witness"
	"golang.org/x/mod/sumdb/note"
)

// Policy says which witness cosignatures make a checkpoint count. It is the
// C2SP tlog-policy / Sigsum policy syntax, parsed by
// github.com/transparency-dev/formats/witness, for example:
//
//	witness w1 w1.example+1234abcd+BASE64KEY https://w1.example
//	witness w2 w2.example+5678abcd+BASE64KEY https://w2.example
//	witness w3 w3.example+9abcdef0+BASE64KEY https://w3.example
//	group g 2 w1 w2 w3
//	quorum g
type Policy struct {
	group     witness.Group
	text      []byte
	witnesses []Witness
}

// Witness is one witness named in a policy.
type Witness struct {
	// Name is the witness's key name.
	Name string
	// AddCheckpointURL is the witness's tlog-witness add-checkpoint endpoint.
	AddCheckpointURL string
	// Verifier checks the witness's cosignature/v1 signatures.
	Verifier note.Verifier
}

// ParsePolicy parses a policy file.
func ParsePolicy(text []byte) (*Policy, error) {
	g, err := witness.ParsePolicy(text)
	if err != nil {
		return nil, fmt.Errorf("witness policy: %w", err)
	}
	p := &Policy{group: g, text: bytes.Clone(text)}
	for url, v := range g.Endpoints() {
		p.witnesses = append(p.witnesses, Witness{Name: v.Name(), AddCheckpointURL: url, Verifier: v})
	}
	sort.Slice(p.witnesses, func(i, j int) bool { return p.witnesses[i].Name < p.witnesses[j].Name })
	return p, nil
}

// NoWitnesses is the policy that needs no cosignature: a log run without
// witnesses, for try-outs and for tests of the log alone.
func NoWitnesses() *Policy {
	p, err := ParsePolicy([]byte("quorum none\n"))
	if err != nil {
		panic(err)
	}
	return p
}

// Text returns the policy file as it was parsed.
func (p *Policy) Text() []byte { return bytes.Clone(p.text) }

// Witnesses lists the witnesses the policy names, sorted by name.
func (p *Policy) Witnesses() []Witness { return p.witnesses }

// Verifiers returns the cosignature verifiers of every witness in the policy,
// to pass to Open as extra verifiers.
func (p *Policy) Verifiers() []note.Verifier {
	vs := make([]note.Verifier, len(p.witnesses))
	for i, w := range p.witnesses {
		vs[i] = w.Verifier
	}
	return vs
}

// Satisfied reports whether the signed checkpoint note carries enough valid
// witness cosignatures to meet the policy. It does not check the log's own
// signature: use Open for that.
func (p *Policy) Satisfied(signedNote []byte) bool {
	return p.group.Satisfied(signedNote)
}

// OpenWithPolicy opens a checkpoint note with the log's key and also requires
// that its cosignatures meet the policy.
func OpenWithPolicy(msg []byte, origin string, logVerifier note.Verifier, p *Policy) (*Signed, error) {
	s, err := Open(msg, origin, logVerifier, p.Verifiers()...)
	if err != nil {
		return nil, err
	}
	if !p.Satisfied(msg) {
		return nil, fmt.Errorf("%w: the witness policy is not met", ErrNotCosigned)
	}
	return s, nil
}

// ErrNotCosigned means a checkpoint lacks the cosignatures a policy needs.
var ErrNotCosigned = fmt.Errorf("checkpoint: not cosigned")

// AddSignatures returns the note msg with extra signature lines appended.
// Lines already present are not repeated. Each line must be a complete
// signed-note signature line ("— name base64\n"); the caller has verified it.
func AddSignatures(msg []byte, sigLines ...[]byte) []byte {
	out := bytes.Clone(msg)
	have := string(msg)
	for _, l := range sigLines {
		if len(l) == 0 {
			continue
		}
		line := string(l)
		if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		if strings.Contains(have, line) {
			continue
		}
		out = append(out, line...)
		have += line
	}
	return out
}
