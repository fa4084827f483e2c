package entry

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/carelog/carelog/submitter"
	"golang.org/x/mod/sumdb/note"
)

// MaxEntrySize bounds a whole signed entry (event line plus signature lines).
const MaxEntrySize = MaxEventSize + 2<<10

// Errors of the signature layer. ErrUnsigned, ErrBadSignature and the
// submitter package's ErrUnknownKey and ErrKeyNotValid mean 403; ErrMalformed
// and *FieldError mean 400; ErrTooLarge means 413.
var (
	ErrMalformed       = errors.New("entry: not a signed note (want the JSON line, a blank line, and one signature line)")
	ErrUnsigned        = errors.New("entry: no submitter signature")
	ErrBadSignature    = errors.New("entry: signature does not verify")
	ErrManySignatures  = errors.New("entry: must carry exactly one signature, by its submitter")
	ErrSourceMismatch  = errors.New(`entry: field "source.system" must equal the name of the signing submitter`)
	ErrTimeInTheFuture = errors.New(`entry: field "time" is too far in the future`)
)

// MaxClockSkew is how far in the future an event's time may be.
const MaxClockSkew = 10 * time.Minute

// Entry is a verified, validated log entry.
type Entry struct {
	// Raw is the signed note exactly as submitted: the log stores these bytes.
	Raw []byte
	// Event is the parsed access event.
	Event *Event
	// Submitter is the registered name of the key that signed it.
	Submitter string
	// KeyHash identifies which of the submitter's keys signed it.
	KeyHash uint32
}

// Open checks a signed entry: size, note syntax, exactly one signature by a
// registered submitter key valid at time at, the event schema, that the
// event's source.system names the signer, and that its time is not beyond
// at plus MaxClockSkew. The log passes the arrival time; a monitor replaying
// old entries passes the event's own time (see OpenForReplay).
func Open(raw []byte, reg *submitter.Registry, at time.Time) (*Entry, error) {
	e, err := open(raw, reg)
	if err != nil {
		return nil, err
	}
	if err := reg.ValidAt(e.Submitter, e.KeyHash, at); err != nil {
		return nil, err
	}
	if e.Event.When().After(at.Add(MaxClockSkew)) {
		return nil, ErrTimeInTheFuture
	}
	return e, nil
}

// OpenForReplay checks an entry already in the log: everything Open checks,
// with key validity judged at the event's own time.
func OpenForReplay(raw []byte, reg *submitter.Registry) (*Entry, error) {
	e, err := open(raw, reg)
	if err != nil {
		return nil, err
	}
	if err := reg.ValidAt(e.Submitter, e.KeyHash, e.Event.When()); err != nil {
		return nil, err
	}
	return e, nil
}

func open(raw []byte, reg *submitter.Registry) (*Entry, error) {
	if len(raw) > MaxEntrySize {
		return nil, ErrTooLarge
	}
	if !utf8.Valid(raw) {
		return nil, &FieldError{Problem: "not valid UTF-8"}
	}
	text, sigs, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok || len(text) == 0 {
		if bytes.Count(raw, []byte("\n")) <= 1 {
			return nil, ErrUnsigned
		}
		return nil, ErrMalformed
	}
	if len(bytes.TrimSpace(sigs)) == 0 {
		return nil, ErrUnsigned
	}
	if bytes.Contains(text, []byte("\n")) {
		return nil, &FieldError{Problem: "must be one line of JSON"}
	}
	if len(text) > MaxEventSize {
		return nil, ErrTooLarge
	}
	n, err := note.Open(raw, reg.Verifiers())
	if err != nil {
		var unknown *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &unknown):
			return nil, submitter.ErrUnknownKey
		case errors.As(err, &invalid):
			return nil, ErrBadSignature
		}
		return nil, ErrMalformed
	}
	if len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0 {
		return nil, ErrManySignatures
	}
	ev, err := ParseEvent(text)
	if err != nil {
		return nil, err
	}
	sig := n.Sigs[0]
	if ev.Source.System != sig.Name {
		return nil, ErrSourceMismatch
	}
	return &Entry{Raw: raw, Event: ev, Submitter: sig.Name, KeyHash: sig.Hash}, nil
}

// Sign marshals ev as one JSON line, validates it, and signs it with the
// submitter's signer. The result is what POST /add-entry takes.
func Sign(ev *Event, signer note.Signer) ([]byte, error) {
	line, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if _, err := ParseEvent(line); err != nil {
		return nil, err
	}
	return SignLine(line, signer)
}

// SignLine signs an already-encoded JSON line as is.
func SignLine(line []byte, signer note.Signer) ([]byte, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return note.Sign(&note.Note{Text: string(line) + "\n"}, signer)
}

// Text returns the JSON line of a signed entry (without its newline) without
// verifying anything. For display only.
func Text(raw []byte) []byte {
	text, _, _ := bytes.Cut(raw, []byte("\n"))
	return text
}

// Pseudonym computes a patient's pseudonym: base64url(HMAC-SHA256(K, salt ‖
// patient-id)). K belongs to the organisation that holds patient identities
// and salt is the patient's own random salt; destroying the salt makes the
// patient's entries unlinkable (crypto-shredding).
func Pseudonym(key, salt []byte, patientID string) string {
	m := hmac.New(sha256.New, key)
	m.Write(salt)
	m.Write([]byte(patientID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// IdentityHash is what makes (submitter, id) unique in the log: the same
// event id from the same submitter is either the same entry again (a
// duplicate) or a conflict.
func IdentityHash(submitterName, eventID string) []byte {
	h := sha256.Sum256(fmt.Appendf(nil, "carelog/entry-id/v1\n%s\n%s", submitterName, eventID))
	return h[:]
}
