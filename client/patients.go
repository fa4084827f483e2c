package client

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/carelog/carelog/api"
	"github.com/carelog/carelog/checkpoint"
	"github.com/carelog/carelog/entry"
)

// PatientEvent is one verified access event about a patient.
type PatientEvent struct {
	Index uint64
	Entry []byte
	Event *entry.Event
}

// PatientEvents fetches every entry about the patient with this pseudonym
// in the tree that cp (a verified checkpoint) commits to, and verifies each
// one's inclusion proof against cp and that it really names the patient.
// The log could still leave entries out; monitors keep their own index to
// catch that.
func (l *Log) PatientEvents(ctx context.Context, pseudonym string, cp checkpoint.Checkpoint) ([]PatientEvent, error) {
	var out []PatientEvent
	after := ""
	for {
		q := url.Values{"size": {strconv.FormatUint(cp.Size, 10)}}
		if after != "" {
			q.Set("after", after)
		}
		var page api.PatientEvents
		if err := l.getJSON(ctx, api.PathPatientEvents+url.PathEscape(pseudonym)+"/events?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		if page.Size != cp.Size {
			return nil, fmt.Errorf("client: asked for size %d, got %d", cp.Size, page.Size)
		}
		for _, e := range page.Events {
			if err := checkpoint.VerifyInclusion(cp, e.Index, checkpoint.LeafHash(e.Data), e.Proof); err != nil {
				return nil, err
			}
			ev, err := entry.ParseEvent(entry.Text(e.Data))
			if err != nil {
				return nil, fmt.Errorf("client: entry %d: %w", e.Index, err)
			}
			if ev.Patient != pseudonym {
				return nil, fmt.Errorf("client: the log returned entry %d, which is about another patient", e.Index)
			}
			out = append(out, PatientEvent{Index: e.Index, Entry: e.Data, Event: ev})
		}
		if page.Next == nil {
			return out, nil
		}
		after = strconv.FormatUint(*page.Next, 10)
	}
}
