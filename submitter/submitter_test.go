package submitter_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/submitter"
)

func TestParseRefusals(t *testing.T) {
	_, ed, _ := submitter.GenerateEd25519("ehr.a")
	_, other, _ := submitter.GenerateEd25519("ehr.b")
	_, ec, _ := submitter.GenerateECDSA("ehr.a")
	cases := map[string]string{
		"unknown field":    `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + ed + `","not_afer":"2027-01-01T00:00:00Z"}]}]}`,
		"no name":          `{"submitters":[{"keys":[{"vkey":"` + ed + `"}]}]}`,
		"no keys":          `{"submitters":[{"name":"ehr.a","keys":[]}]}`,
		"bad key":          `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"ehr.a+12345678+AAAA"}]}]}`,
		"key of another":   `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + other + `"}]}]}`,
		"twice":            `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + ed + `"}]},{"name":"ehr.a","keys":[{"vkey":"` + ec + `"}]}]}`,
		"inverted window":  `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + ed + `","not_before":"2027-01-01T00:00:00Z","not_after":"2026-01-01T00:00:00Z"}]}]}`,
		"not JSON":         `submitters: []`,
		"same key twice":   `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + ed + `"},{"vkey":"` + ed + `"}]}]}`,
		"cosignature type": `{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + strings.Replace(ed, "+A", "+B", 1) + `"}]}]}`,
	}
	for name, text := range cases {
		if _, err := submitter.Parse([]byte(text)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	r, err := submitter.Parse([]byte(`{"submitters":[{"name":"ehr.a","keys":[{"vkey":"` + ed + `"},{"vkey":"` + ec + `","not_after":"2026-01-01T00:00:00Z"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Known("ehr.a") || r.Known("ehr.b") {
		t.Fatal("Known")
	}
	if err := r.ValidAt("ehr.a", 1, time.Now()); !errors.Is(err, submitter.ErrUnknownKey) {
		t.Fatalf("unknown key hash: %v", err)
	}
}
