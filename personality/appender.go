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
}

// errConflict: the submitter already used this event id for other bytes.
var errConflict = errors.New("this submitter already logged another entry with this event id")

// queueAppender appends through Trillian's QueueLeaf; Trillian's sequencer
// assigns indices later. Duplicate suppression uses Trillian's leaf identity
// hash, set to entry.IdentityHash(submitter, event id).
type queueAppender struct {
	log    trillian.TrillianLogClient
	treeID int64
}

func (a *queueAppender) Append(ctx context.Context, e *entry.Entry) (appended, error) {
	leaf := &trillian.LogLeaf{
		LeafValue:        e.Raw,
		LeafIdentityHash: entry.IdentityHash(e.Submitter, e.Event.ID),
	}
	resp, err := a.log.QueueLeaf(ctx, &trillian.QueueLeafRequest{LogId: a.treeID, Leaf: leaf})
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
