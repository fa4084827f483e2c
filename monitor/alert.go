package monitor

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Kind names what an alert is about. docs/monitor.md says, for each, what
// it means and what to do.
type Kind string

// Integrity alerts: evidence that the log misbehaved.
const (
	// KindBadCheckpoint: the log served a checkpoint that does not verify
	// with its key, or that lacks the cosignatures the policy needs.
	KindBadCheckpoint Kind = "bad-checkpoint"
	// KindSplitView: two log-signed checkpoints that cannot both be true
	// (same size with different roots, or no valid consistency proof).
	KindSplitView Kind = "split-view"
	// KindRollback: the log served a smaller checkpoint after a larger one.
	KindRollback Kind = "rollback"
	// KindRewrite: the entries the log serves do not hash to its signed root.
	KindRewrite Kind = "rewrite"
	// KindBadEntry: an entry fails its submitter signature or the schema.
	KindBadEntry Kind = "bad-entry"
	// KindBrokenPromise: a promised entry is not in the log after the
	// maximum merge delay.
	KindBrokenPromise Kind = "broken-promise"
	// KindStaleLog: the log's checkpoint is too old, or has not advanced
	// while promises are pending.
	KindStaleLog Kind = "stale-log"
)

// Watch alerts: accesses someone should look at.
const (
	KindEmergencyAccess Kind = "emergency-access"
	KindWatchedPatient  Kind = "watched-patient"
	KindSnooping        Kind = "snooping"
	KindKeyValidity     Kind = "key-validity"
)

// Kinds lists every alert kind.
var Kinds = []Kind{
	KindBadCheckpoint, KindSplitView, KindRollback, KindRewrite, KindBadEntry, KindBrokenPromise, KindStaleLog,
	KindEmergencyAccess, KindWatchedPatient, KindSnooping, KindKeyValidity,
}

// Class groups alert kinds by what they mean for an exit code.
type Class string

const (
	// ClassIntegrity alerts are evidence against the log: RunOnce's exit
	// code is ExitIntegrity while any is unacknowledged.
	ClassIntegrity Class = "integrity"
	// ClassWatch alerts report accesses to review.
	ClassWatch Class = "watch"
)

// Class returns the kind's class.
func (k Kind) Class() Class {
	switch k {
	case KindEmergencyAccess, KindWatchedPatient, KindSnooping, KindKeyValidity:
		return ClassWatch
	}
	return ClassIntegrity
}

// Alert is one finding. It never carries PHI: patients appear only as
// pseudonyms, entries only as indices, actors as their organisation's
// identifiers.
type Alert struct {
	// ID is the alert's number in this monitor's state.
	ID int64 `json:"id"`
	// UID is stable for the same finding, also across restarts; webhooks
	// receive it as the Idempotency-Key header.
	UID   string    `json:"uid"`
	Kind  Kind      `json:"kind"`
	Class Class     `json:"class"`
	Log   string    `json:"log"`
	Time  time.Time `json:"time"`
	// Message says what was found, without PHI.
	Message string `json:"message"`
	// Index is the entry concerned, if one is.
	Index *uint64 `json:"index,omitempty"`
	// Range is [start, end) of the entries concerned, if several are.
	Range *IndexRange `json:"range,omitempty"`
	// Patient is a patient pseudonym (never an identity).
	Patient string `json:"patient,omitempty"`
	// Actor is "org/id" of the person who accessed the record.
	Actor string `json:"actor,omitempty"`
	// Submitter is the registered name of the system that signed the entry.
	Submitter string `json:"submitter,omitempty"`
	// Evidence holds the signed notes that prove the finding: both
	// checkpoints of a split view, the promise that was broken, ...
	Evidence []Evidence `json:"evidence,omitempty"`
	// Acknowledged is set once an operator acknowledged the alert.
	Acknowledged bool `json:"acknowledged"`

	key string // deduplication key: the same finding is raised once
}

// IndexRange is a half-open range of entry indices.
type IndexRange struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
}

// Evidence is a signed note and where the monitor got it.
type Evidence struct {
	// Source is "log", "witness/<name>", "peer/<name>", "promise" or
	// "monitor" (the monitor's own verified state).
	Source string `json:"source"`
	// Note is the signed note text, verifiable by anyone with the log's key.
	Note string `json:"note"`
}

func newAlert(kind Kind, log, key, msg string) Alert {
	return Alert{Kind: kind, Class: kind.Class(), Log: log, Message: msg, key: string(kind) + "|" + log + "|" + key}
}

func uid(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}

func u64(v uint64) *uint64 { return &v }
