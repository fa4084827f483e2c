package promise_test

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/carelog/carelog/promise"
	"golang.org/x/mod/sumdb/note"
)

func TestSignOpen(t *testing.T) {
	const origin = "example.org/log"
	skey, vkey, _ := note.GenerateKey(nil, origin)
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	h := sha256.Sum256([]byte("leaf"))
	at := time.Date(2026, 11, 20, 10, 0, 0, 123, time.UTC)
	p := promise.Promise{Origin: origin, LeafHash: h[:], Accepted: at}
	msg, err := promise.Sign(p, s)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := promise.Sign(p, s)
	if again != msg {
		t.Fatal("signing the same promise twice gave different bytes; duplicates must get the original promise")
	}
	got, err := promise.Open([]byte(msg), origin, v)
	if err != nil || !got.Accepted.Equal(at) || string(got.LeafHash) != string(h[:]) {
		t.Fatalf("Open: %+v %v", got, err)
	}
	if _, err := promise.Open([]byte(msg), "other.org/log", v); err == nil {
		t.Fatal("opened a promise for another origin")
	}
	forged := strings.Replace(msg, at.Format(time.RFC3339Nano), at.Add(time.Hour).Format(time.RFC3339Nano), 1)
	if _, err := promise.Open([]byte(forged), origin, v); err == nil {
		t.Fatal("opened a promise whose time was changed")
	}
	// A checkpoint signed by the same key is not a promise.
	cp, _ := note.Sign(&note.Note{Text: origin + "\n5\nAAAA\n"}, s)
	if _, err := promise.Open(cp, origin, v); err == nil {
		t.Fatal("a checkpoint opened as a promise")
	}
}
