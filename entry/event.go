// Package entry is the one definition of a carelog log entry: an access event
// (DESIGN.md section 3) as one line of JSON, signed by its submitter as a
// C2SP signed note. The log validates entries with it before appending; the
// monitor re-validates every entry it replays; the SDK builds and signs them.
//
// Validation is strict on purpose. The log is append-only and public to its
// auditors, so it must never take in personal health information: every
// field has a closed vocabulary or an identifier syntax with no spaces, so
// names, diagnoses and notes have nowhere to go. Errors name the field and
// the rule broken, never the value, because the value may be PHI.
package entry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxEventSize is the largest JSON line accepted, in bytes (without the
// newline that ends the note text).
const MaxEventSize = 8 << 10

// Version is the only schema version this code writes and accepts.
const Version = 1

// Event is an access event, the payload of an entry.
type Event struct {
	V        int       `json:"v"`
	ID       string    `json:"id"`
	Time     string    `json:"time"`
	Action   string    `json:"action"`
	Event    string    `json:"event"`
	Outcome  int       `json:"outcome"`
	Actor    Actor     `json:"actor"`
	Patient  string    `json:"patient,omitempty"`
	Purpose  string    `json:"purpose"`
	Resource Resource  `json:"resource"`
	Source   Source    `json:"source"`
	when     time.Time // Time, parsed
}

// Actor is who accessed the record: an identifier meaningful to their
// organisation, never a name.
type Actor struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	Org  string `json:"org"`
}

// Resource is what was accessed: a FHIR resource type, an opaque id, and
// optionally the lower-case hex SHA-256 of the version read or written.
type Resource struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Digest string `json:"digest,omitempty"`
}

// Source is the submitting system; System must equal the submitter's
// registered name (the name of the key that signs the entry).
type Source struct {
	System string `json:"system"`
	Site   string `json:"site,omitempty"`
}

// When returns the event's time, parsed.
func (e *Event) When() time.Time { return e.when }

// FieldError says which field of an event is wrong and why. It never holds
// the field's value.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "entry: " + e.Problem
	}
	return fmt.Sprintf("entry field %q: %s", e.Field, e.Problem)
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// ErrTooLarge means the event is over MaxEventSize.
var ErrTooLarge = fmt.Errorf("entry: event is larger than %d bytes", MaxEventSize)

// Vocabularies. Codes follow FHIR AuditEvent, IHE BALP and HL7 PurposeOfUse.
var (
	Actions = set("C", "R", "U", "D", "E")
	Events  = set("create", "read", "update", "delete", "search", "export", "import",
		"print", "disclose", "break-glass", "consent-override")
	Outcomes = map[int]bool{0: true, 4: true, 8: true, 12: true}
	Purposes = set("TREAT", "ETREAT", "BTG", "CAREMGT", "CLINTRL", "COC", "HPAYMT", "HOPERAT",
		"HMARKT", "HRESCH", "HQUALIMP", "HSYSADMIN", "HLEGAL", "LEGAL", "PATRQT", "FAMRQT",
		"PWATRNY", "SUPNWK", "PUBHLTH", "POPHLTH", "DISASTER", "THREAT", "PATADMIN",
		"PATSFTY", "RECORDMGT", "TRAIN", "SYSDEV", "HDIRECT", "COVERAGE", "FRAUD", "OPERAT")
)

// EmergencyPurposes are the purposes that mark emergency access.
var EmergencyPurposes = set("ETREAT", "BTG")

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

var (
	// identifier: ids, org codes, roles, sites. No spaces, so no free text.
	identRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$`)
	resourceTypeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`)
	digestRE       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	uuidRE         = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// field kinds for the strict decoder
type kind int

const (
	kString kind = iota
	kInt
	kObject
)

type fieldSpec struct {
	kind     kind
	required bool
	sub      map[string]fieldSpec // for objects
}

var schema = map[string]fieldSpec{
	"v":       {kind: kInt, required: true},
	"id":      {kind: kString, required: true},
	"time":    {kind: kString, required: true},
	"action":  {kind: kString, required: true},
	"event":   {kind: kString, required: true},
	"outcome": {kind: kInt, required: true},
	"actor": {kind: kObject, required: true, sub: map[string]fieldSpec{
		"id": {kind: kString, required: true}, "role": {kind: kString, required: true}, "org": {kind: kString, required: true},
	}},
	"patient": {kind: kString},
	"purpose": {kind: kString, required: true},
	"resource": {kind: kObject, required: true, sub: map[string]fieldSpec{
		"type": {kind: kString, required: true}, "id": {kind: kString, required: true}, "digest": {kind: kString},
	}},
	"source": {kind: kObject, required: true, sub: map[string]fieldSpec{
		"system": {kind: kString, required: true}, "site": {kind: kString},
	}},
}

// ParseEvent parses and validates one JSON line. It refuses unknown and
// duplicate fields, wrong types, missing required fields, values outside the
// vocabularies, and anything that could carry free text.
func ParseEvent(line []byte) (*Event, error) {
	if len(line) > MaxEventSize {
		return nil, ErrTooLarge
	}
	if !utf8.Valid(line) {
		return nil, &FieldError{Problem: "not valid UTF-8"}
	}
	if bytes.ContainsAny(line, "\n\r") {
		return nil, &FieldError{Problem: "must be one line of JSON"}
	}
	if err := checkShape(line, schema, ""); err != nil {
		return nil, err
	}
	var e Event
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		// checkShape has already vetted names and types; this is a safety net.
		return nil, &FieldError{Problem: "does not match the schema"}
	}
	if err := e.validate(); err != nil {
		return nil, err
	}
	return &e, nil
}

// checkShape walks one JSON object: no duplicate or unknown names, the right
// JSON type for each, required fields present.
func checkShape(obj []byte, spec map[string]fieldSpec, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		if prefix == "" {
			return &FieldError{Problem: "must be a JSON object"}
		}
		return fieldErr(strings.TrimSuffix(prefix, "."), "must be an object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return &FieldError{Problem: "malformed JSON"}
		}
		name, _ := tok.(string)
		path := prefix + name
		if seen[name] {
			return fieldErr(path, "appears twice")
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return &FieldError{Problem: "malformed JSON"}
		}
		fs, ok := spec[name]
		if !ok {
			return fieldErr(path, "unknown field (free text and extra fields are not allowed)")
		}
		switch fs.kind {
		case kString:
			if len(raw) == 0 || raw[0] != '"' {
				return fieldErr(path, "must be a string")
			}
		case kInt:
			var n json.Number
			if err := json.Unmarshal(raw, &n); err != nil || len(raw) == 0 || raw[0] == '"' {
				return fieldErr(path, "must be an integer")
			}
			if _, err := n.Int64(); err != nil {
				return fieldErr(path, "must be an integer")
			}
		case kObject:
			if err := checkShape(raw, fs.sub, path+"."); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return &FieldError{Problem: "malformed JSON"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &FieldError{Problem: "trailing data after the JSON object"}
	}
	names := make([]string, 0, len(spec))
	for n := range spec {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if spec[n].required && !seen[n] {
			return fieldErr(prefix+n, "is required")
		}
	}
	return nil
}

func (e *Event) validate() error {
	if e.V != Version {
		return fieldErr("v", "must be %d", Version)
	}
	if !uuidRE.MatchString(e.ID) {
		return fieldErr("id", "must be a UUID")
	}
	t, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil || !strings.HasSuffix(e.Time, "Z") {
		return fieldErr("time", "must be an RFC 3339 time in UTC (ending in Z)")
	}
	e.when = t
	if !Actions[e.Action] {
		return fieldErr("action", "must be one of C, R, U, D, E")
	}
	if !Events[e.Event] {
		return fieldErr("event", "must be one of %s", keys(Events))
	}
	if !Outcomes[e.Outcome] {
		return fieldErr("outcome", "must be 0, 4, 8 or 12")
	}
	if err := ident("actor.id", e.Actor.ID); err != nil {
		return err
	}
	if err := ident("actor.role", e.Actor.Role); err != nil {
		return err
	}
	if err := ident("actor.org", e.Actor.Org); err != nil {
		return err
	}
	if e.Patient != "" {
		if err := CheckPseudonym(e.Patient); err != nil {
			return fieldErr("patient", "%v", err)
		}
	} else if e.Action != "E" {
		// Only executions (queries, exports, prints) may span patients.
		return fieldErr("patient", "is required unless action is E")
	}
	if !Purposes[e.Purpose] {
		return fieldErr("purpose", "must be an HL7 PurposeOfUse code such as TREAT, ETREAT, HPAYMT, HOPERAT, PATRQT, PUBHLTH, HRESCH")
	}
	if !resourceTypeRE.MatchString(e.Resource.Type) {
		return fieldErr("resource.type", "must be a FHIR resource type such as Observation")
	}
	if err := ident("resource.id", e.Resource.ID); err != nil {
		return err
	}
	if e.Resource.Digest != "" && !digestRE.MatchString(e.Resource.Digest) {
		return fieldErr("resource.digest", "must be 64 lower-case hex digits (SHA-256)")
	}
	if err := ident("source.system", e.Source.System); err != nil {
		return err
	}
	if e.Source.Site != "" {
		if err := ident("source.site", e.Source.Site); err != nil {
			return err
		}
	}
	return nil
}

func ident(field, v string) error {
	if v == "" {
		return fieldErr(field, "is required")
	}
	if !identRE.MatchString(v) {
		return fieldErr(field, "must be an identifier: 1 to 128 of A-Z a-z 0-9 . _ : @ / + = -, no spaces")
	}
	return nil
}

// CheckPseudonym checks the shape of a patient pseudonym: unpadded base64url
// of a 32-byte HMAC-SHA256.
func CheckPseudonym(p string) error {
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || len(b) != 32 {
		return errors.New("must be an unpadded base64url HMAC-SHA256 (43 characters)")
	}
	return nil
}

func keys(m map[string]bool) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}
