package personality

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
	"github.com/google/trillian"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// appender is the seam of the append path: validation and the API sit in
// front of it, storage behind it. Append stores a validated entry durably or
// fails having stored nothing.
type appender interface {
	Append(ctx context.Context, e *entry.Entry) (appended, error)
}

// appended is what the append path tells the API about an entry.
type appended struct {
	LeafHash []byte
	// Accepted is when the log first accepted the entry; for a duplicate it
	// is the original's time, so the promise is the original's too.
	Accepted  time.Time
	Duplicate bool
	// Index is set when the entry's index is already durable.
	Index *uint64
}

// errConflict: the submitter already used this event id for other bytes.
var errConflict = errors.New("this submitter already logged another entry with this event id")

// queueAppender appends through Trillian's QueueLeaf; Trillian's sequencer
// assigns indices later. Duplicate suppression uses Trillian's leaf identity
// hash, set to entry.IdentityHash(submitter, event id).
type queueAppender struct {
	log    trillian.TrillianLogClient
	treeID int64
	locks  keyedLocks
}

func (a *queueAppender) Append(ctx context.Context, e *entry.Entry) (appended, error) {
	id := entry.IdentityHash(e.Submitter, e.Event.ID)
	// Trillian's MySQL storage fails a duplicate whose original is still
	// uncommitted in a concurrent transaction ("failed to retrieve all
	// existing leaves"). Appends of one identity are therefore serialised
	// here, and retried a few times in case another replica raced us.
	unlock := a.locks.lock(string(id))
	defer unlock()
	var resp *trillian.QueueLeafResponse
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		leaf := &trillian.LogLeaf{LeafValue: e.Raw, LeafIdentityHash: id}
		resp, err = a.log.QueueLeaf(ctx, &trillian.QueueLeafRequest{LogId: a.treeID, Leaf: leaf})
		if err == nil || status.Code(err) != codes.Unknown || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(20<<attempt) * time.Millisecond)
	}
	if err != nil {
		return appended{}, fmt.Errorf("queueing leaf: %w", err)
	}
	ql := resp.GetQueuedLeaf()
	out := appended{LeafHash: checkpoint.LeafHash(e.Raw), Accepted: ql.GetLeaf().GetQueueTimestamp().AsTime()}
	switch c := codes.Code(ql.GetStatus().GetCode()); c {
	case codes.OK:
	case codes.AlreadyExists:
		if !bytes.Equal(ql.GetLeaf().GetLeafValue(), e.Raw) {
			return appended{}, errConflict
		}
		out.Duplicate = true
	default:
		return appended{}, fmt.Errorf("queueing leaf: %w", status.ErrorProto(ql.GetStatus()))
	}
	return out, nil
}

// memoryDedup adds duplicate suppression in front of an appender whose
// storage has none (Trillian's memory storage, used only for try-outs).
type memoryDedup struct {
	next appender
	mu   sync.Mutex
	seen map[string]dedupRecord
}

type dedupRecord struct {
	raw      []byte
	accepted time.Time
}

func (d *memoryDedup) Append(ctx context.Context, e *entry.Entry) (appended, error) {
	id := string(entry.IdentityHash(e.Submitter, e.Event.ID))
	d.mu.Lock()
	defer d.mu.Unlock() // serialises appends: fine for a try-out
	if r, ok := d.seen[id]; ok {
		if !bytes.Equal(r.raw, e.Raw) {
			return appended{}, errConflict
		}
		return appended{LeafHash: checkpoint.LeafHash(e.Raw), Accepted: r.accepted, Duplicate: true}, nil
	}
	a, err := d.next.Append(ctx, e)
	if err != nil {
		return a, err
	}
	if a.Accepted.Unix() <= 0 {
		a.Accepted = time.Now()
	}
	d.seen[id] = dedupRecord{raw: e.Raw, accepted: a.Accepted}
	return a, nil
}

// keyedLocks is a set of mutexes created on demand, one per key in use.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
