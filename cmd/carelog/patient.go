package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/carelog/carelog/entry"
)

func cmdPatientReport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("patient-report", flag.ContinueOnError)
	var lf logFlags
	lf.register(fs, true)
	pseudonym := fs.String("pseudonym", "", "the patient's pseudonym")
	hmacKey := fs.String("hmac-key-file", "", "instead of --pseudonym: file with the organisation's pseudonym key K (raw bytes)")
	salt := fs.String("salt", "", "with --hmac-key-file: the patient's salt, base64")
	patientID := fs.String("patient-id", "", "with --hmac-key-file: the patient's identifier")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p := *pseudonym
	if p == "" {
		if *hmacKey == "" || *salt == "" || *patientID == "" {
			return errors.New("give --pseudonym, or --hmac-key-file with --salt and --patient-id")
		}
		k, err := os.ReadFile(*hmacKey)
		if err != nil {
			return err
		}
		s, err := base64.StdEncoding.DecodeString(*salt)
		if err != nil {
			return fmt.Errorf("--salt: %w", err)
		}
		p = entry.Pseudonym(k, s, *patientID)
	}
	c, err := lf.client()
	if err != nil {
		return err
	}
	cp, err := c.Checkpoint(ctx)
	if err != nil {
		return verificationFailed(err)
	}
	evs, err := c.PatientEvents(ctx, p, cp.Checkpoint)
	if err != nil {
		return verificationFailed(err)
	}
	fmt.Printf("%d access events in the log's tree of size %d (each inclusion proof verified)\n\n", len(evs), cp.Size)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tEVENT\tACTOR\tROLE\tORG\tPURPOSE\tRESOURCE\tSYSTEM")
	for _, e := range evs {
		ev := e.Event
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\t%s\n", e.Index, ev.Time, ev.Event, ev.Actor.ID, ev.Actor.Role,
			ev.Actor.Org, ev.Purpose, ev.Resource.Type, ev.Resource.ID, ev.Source.System)
	}
	return tw.Flush()
}
