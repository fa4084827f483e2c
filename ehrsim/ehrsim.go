// Package ehrsim simulates an EHR system's access events: realistic,
// schema-valid, PHI-free events for demos, load tests and tests.
package ehrsim

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/carelog/carelog/entry"
	"github.com/google/uuid"
)

// Generator makes access events for one submitting system.
type Generator struct {
	// System is the submitter name (source.system).
	System string
	// Site is the source.site, e.g. a hospital code.
	Site string
	// Patients and Actors size the simulated population.
	Patients, Actors int
	// SnoopEvery makes one event in SnoopEvery come from the snooper: a
	// staff member who reads the records of many unrelated patients. 0: no
	// snooper.
	SnoopEvery int

	n   int
	rng *rand.Rand
	key []byte
}

// New returns a generator with a deterministic stream for seed.
func New(system string, seed uint64) *Generator {
	return &Generator{
		System: system, Site: "site-1", Patients: 500, Actors: 40, SnoopEvery: 0,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		key: []byte(fmt.Sprintf("ehrsim-pseudonym-key-%d", seed)),
	}
}

// Pseudonym returns the pseudonym of simulated patient n.
func (g *Generator) Pseudonym(n int) string {
	return entry.Pseudonym(g.key, []byte(fmt.Sprintf("salt-%d", n)), fmt.Sprintf("patient-%d", n))
}

// Next returns a new, typical event: mostly reads under treatment, some
// searches, updates and exports, rarely a break-glass.
func (g *Generator) Next(at time.Time) *entry.Event {
	g.n++
	if g.SnoopEvery > 0 && g.n%g.SnoopEvery == 0 {
		return g.snoop(at)
	}
	actor := g.rng.IntN(g.Actors)
	e := &entry.Event{
		V:       entry.Version,
		ID:      uuid.Must(uuid.NewRandomFromReader(g)).String(),
		Time:    at.UTC().Format(time.RFC3339Nano),
		Outcome: 0,
		Actor:   entry.Actor{ID: fmt.Sprintf("staff-%04d", actor), Role: roles[actor%len(roles)], Org: "org-1"},
		Patient: g.Pseudonym(g.rng.IntN(g.Patients)),
		Purpose: "TREAT",
		Source:  entry.Source{System: g.System, Site: g.Site},
	}
	r := g.rng.IntN(1000)
	switch {
	case r < 700:
		e.Action, e.Event = "R", "read"
		e.Resource = entry.Resource{Type: types[g.rng.IntN(len(types))], ID: g.resourceID()}
		d := sha256.Sum256([]byte(e.ID))
		e.Resource.Digest = fmt.Sprintf("%x", d)
	case r < 850:
		e.Action, e.Event = "U", "update"
		e.Resource = entry.Resource{Type: types[g.rng.IntN(len(types))], ID: g.resourceID()}
	case r < 950:
		e.Action, e.Event, e.Patient = "E", "search", ""
		e.Resource = entry.Resource{Type: "Patient", ID: "query-" + g.resourceID()}
	case r < 995:
		e.Action, e.Event, e.Purpose = "E", "export", "HOPERAT"
		e.Resource = entry.Resource{Type: "Bundle", ID: g.resourceID()}
	default:
		e.Action, e.Event, e.Purpose = "R", "break-glass", "ETREAT"
		e.Resource = entry.Resource{Type: "Observation", ID: g.resourceID()}
	}
	return e
}

// SnooperID is the actor id of the simulated snooper.
const SnooperID = "staff-0666"

// snoop is a read by the snooper of a random patient's record, under a
// plausible-looking purpose.
func (g *Generator) snoop(at time.Time) *entry.Event {
	return &entry.Event{
		V: entry.Version, ID: uuid.Must(uuid.NewRandomFromReader(g)).String(),
		Time: at.UTC().Format(time.RFC3339Nano), Action: "R", Event: "read", Outcome: 0,
		Actor:    entry.Actor{ID: SnooperID, Role: "admin-clerk", Org: "org-1"},
		Patient:  g.Pseudonym(g.rng.IntN(g.Patients)),
		Purpose:  "TREAT",
		Resource: entry.Resource{Type: "Condition", ID: g.resourceID()},
		Source:   entry.Source{System: g.System, Site: g.Site},
	}
}

// Read implements io.Reader over the generator's random stream, so event
// ids are deterministic for a seed.
func (g *Generator) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(g.rng.Uint32())
	}
	return len(p), nil
}

func (g *Generator) resourceID() string { return fmt.Sprintf("r-%08x", g.rng.Uint32()) }

var (
	roles = []string{"physician", "nurse", "pharmacist", "admin-clerk", "lab-tech"}
	types = []string{"Observation", "Condition", "MedicationRequest", "DiagnosticReport", "Encounter", "AllergyIntolerance", "Immunization"}
)
