package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/carelog/carelog/submitter"
	fnote "github.com/transparency-dev/formats/note"
)

func cmdKeygen(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	name := fs.String("name", "", "key name: the log's origin (e.g. carelog.example.org/log), a submitter's registered name, or a witness's name (required)")
	kind := fs.String("type", "ed25519", "ed25519, or ecdsa (P-256, submitters only)")
	role := fs.String("role", "submitter", "log, submitter or witness (a witness also gets its cosignature/v1 key)")
	out := fs.String("out", "", "write PREFIX.key (private, mode 0600) and PREFIX.vkey; default: print both")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required")
	}
	var skey, vkey string
	var err error
	switch *kind {
	case "ed25519":
		skey, vkey, err = submitter.GenerateEd25519(*name)
	case "ecdsa":
		if *role != "submitter" {
			return errors.New("ECDSA keys are for submitters only: logs and witnesses use Ed25519")
		}
		skey, vkey, err = submitter.GenerateECDSA(*name)
	default:
		return fmt.Errorf("--type %q: want ed25519 or ecdsa", *kind)
	}
	if err != nil {
		return err
	}
	var cosig string
	switch *role {
	case "log", "submitter":
	case "witness":
		if cosig, err = fnote.VKeyToCosignatureV1(vkey); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--role %q: want log, submitter or witness", *role)
	}
	if *out == "" {
		fmt.Println(skey)
		fmt.Println(vkey)
		if cosig != "" {
			fmt.Println(cosig)
		}
		return nil
	}
	if err := os.WriteFile(*out+".key", []byte(skey+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(*out+".vkey", []byte(vkey+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s.key (keep it secret) and %s.vkey\nverifier key: %s\n", *out, *out, vkey)
	if cosig != "" {
		if err := os.WriteFile(*out+".cosig.vkey", []byte(cosig+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Printf("cosignature/v1 key (for policies): %s (in %s.cosig.vkey)\n", cosig, *out)
	}
	return nil
}
