// Package api holds the JSON shapes and paths of carelog's public HTTP API
// (DESIGN.md section 5), and the one mapping of errors to HTTP answers. The
// log serves these shapes; the SDK, the witnesses and the monitor read them.
// Byte fields are standard base64 in JSON, as encoding/json writes []byte.
package api

import (
	"encoding/json"
	"net/http"
)

// Paths of the log personality, relative to its configurable prefix.
const (
	PathAddEntry         = "/add-entry"
	PathCheckpoint       = "/checkpoint"
	PathInclusionProof   = "/proof/inclusion"
	PathConsistencyProof = "/proof/consistency"
	PathProofBundle      = "/proof/bundle"
	PathEntries          = "/entries"
	PathPatientEvents    = "/patients/" // + <pseudonym>/events
)

// MaxEntriesPerRequest bounds GET /entries.
const MaxEntriesPerRequest = 1000

// AddEntryResponse answers POST /add-entry. Index is set (and the status is
// 200) once the entry has a durable index; otherwise the status is 202 and
// the promise commits the log to include it within its maximum merge delay.
type AddEntryResponse struct {
	Index    *uint64 `json:"index,omitempty"`
	LeafHash []byte  `json:"leaf_hash"`
	// Promise is a signed note by the log key (see package promise).
	Promise string `json:"promise"`
}

// InclusionProof answers GET /proof/inclusion.
type InclusionProof struct {
	Index uint64   `json:"index"`
	Size  uint64   `json:"size"`
	Proof [][]byte `json:"proof"`
}

// ConsistencyProof answers GET /proof/consistency.
type ConsistencyProof struct {
	Old   uint64   `json:"old"`
	Size  uint64   `json:"size"`
	Proof [][]byte `json:"proof"`
}

// Entry is one leaf of the log: its index and its stored bytes (the signed
// note the submitter sent, verbatim).
type Entry struct {
	Index uint64 `json:"index"`
	Data  []byte `json:"data"`
}

// Entries answers GET /entries.
type Entries struct {
	Entries []Entry `json:"entries"`
}

// PatientEvent is one of a patient's entries with its inclusion proof.
type PatientEvent struct {
	Index uint64   `json:"index"`
	Data  []byte   `json:"data"`
	Proof [][]byte `json:"proof"`
}

// PatientEvents answers GET /patients/<pseudonym>/events: the patient's
// entries in the tree of the given size, oldest first, each with its
// inclusion proof against that size. Next, when set, is the "after" value
// that fetches the following page.
type PatientEvents struct {
	Size   uint64         `json:"size"`
	Events []PatientEvent `json:"events"`
	Next   *uint64        `json:"next,omitempty"`
}

// MaxPatientEventsPerRequest bounds one page of a patient's events.
const MaxPatientEventsPerRequest = 500

// Error is the body of every error answer: a message that says what to fix.
type Error struct {
	Error string `json:"error"`
}

// WriteJSON writes v as a JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes an error answer. The message goes to the caller as is:
// it must never contain PHI.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, Error{Error: msg})
}
