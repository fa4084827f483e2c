package checkpoint_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/carelog/carelog/checkpoint"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"
)

const origin = "example.org/log"

func keys(t *testing.T, name string) (note.Signer, note.Verifier, string, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(nil, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v, skey, vkey
}

func tree(n int, prefix string) *testonly.Tree {
	tr := testonly.New(rfc6962.DefaultHasher)
	for i := 0; i < n; i++ {
		tr.AppendData([]byte(fmt.Sprintf("%s%d", prefix, i)))
	}
	return tr
}

func TestSignOpen(t *testing.T) {
	s, v, _, _ := keys(t, origin)
	_, other, _, _ := keys(t, origin)
	tr := tree(5, "e")
	cp := checkpoint.Checkpoint{Origin: origin, Size: 5, Hash: tr.Hash()}
	msg, err := checkpoint.Sign(cp, s)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s\n5\n", origin); !strings.HasPrefix(string(msg), want) {
		t.Fatalf("checkpoint text %q does not start with %q", msg, want)
	}
	got, err := checkpoint.Open(msg, origin, v)
	if err != nil || got.Size != 5 || string(got.Hash) != string(tr.Hash()) || len(got.Extensions) != 0 {
		t.Fatalf("Open: %+v, %v", got, err)
	}
	if _, err := checkpoint.Open(msg, origin, other); !errors.Is(err, checkpoint.ErrNoLogSignature) {
		t.Fatalf("other key: %v", err)
	}
	if _, err := checkpoint.Open(msg, "example.org/other", v); !errors.Is(err, checkpoint.ErrWrongOrigin) {
		t.Fatalf("other origin: %v", err)
	}
	if _, err := checkpoint.Open([]byte("garbage"), origin, v); !errors.Is(err, checkpoint.ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
	tampered := strings.Replace(string(msg), "\n5\n", "\n6\n", 1)
	if _, err := checkpoint.Open([]byte(tampered), origin, v); !errors.Is(err, checkpoint.ErrNoLogSignature) {
		t.Fatalf("tampered: %v", err)
	}
	wrongName, _, _, _ := keys(t, "someone.else")
	if _, err := checkpoint.Sign(cp, wrongName); err == nil {
		t.Fatal("signed with a key not named after the origin")
	}
}

func TestVerifyConsistency(t *testing.T) {
	a := tree(20, "e")
	fork := tree(7, "e")
	for i := 7; i < 20; i++ {
		fork.AppendData([]byte(fmt.Sprintf("x%d", i)))
	}
	cp := func(tr *testonly.Tree, n uint64) checkpoint.Checkpoint {
		return checkpoint.Checkpoint{Origin: origin, Size: n, Hash: tr.HashAt(n)}
	}
	proof := func(tr *testonly.Tree, m, n uint64) [][]byte {
		p, err := tr.ConsistencyProof(m, n)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := checkpoint.Checkpoint{Origin: origin, Size: 0, Hash: checkpoint.EmptyRoot()}
	cases := []struct {
		name         string
		older, newer checkpoint.Checkpoint
		proof        [][]byte
		want         error
	}{
		{"growth", cp(a, 9), cp(a, 20), proof(a, 9, 20), nil},
		{"same", cp(a, 9), cp(a, 9), nil, nil},
		{"from empty", empty, cp(a, 20), nil, nil},
		{"smaller", cp(a, 20), cp(a, 9), nil, checkpoint.ErrSmaller},
		{"same size, other root", cp(a, 20), cp(fork, 20), nil, checkpoint.ErrSameSizeNewRoot},
		{"fork with its own proof", cp(a, 9), cp(fork, 20), proof(fork, 9, 20), checkpoint.ErrInconsistent},
		{"no proof", cp(a, 9), cp(a, 20), nil, checkpoint.ErrInconsistent},
		{"bogus empty", checkpoint.Checkpoint{Origin: origin, Hash: a.Hash()}, cp(a, 20), nil, checkpoint.ErrInconsistent},
		{"other origin", cp(a, 9), checkpoint.Checkpoint{Origin: "x", Size: 20, Hash: a.Hash()}, proof(a, 9, 20), checkpoint.ErrInconsistent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkpoint.VerifyConsistency(c.older, c.newer, c.proof)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestVerifyInclusion(t *testing.T) {
	tr := tree(13, "e")
	cp := checkpoint.Checkpoint{Origin: origin, Size: 13, Hash: tr.Hash()}
	for i := uint64(0); i < 13; i++ {
		p, _ := tr.InclusionProof(i, 13)
		if err := checkpoint.VerifyInclusion(cp, i, checkpoint.LeafHash([]byte(fmt.Sprintf("e%d", i))), p); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		if err := checkpoint.VerifyInclusion(cp, (i+1)%13, checkpoint.LeafHash([]byte(fmt.Sprintf("e%d", i))), p); err == nil {
			t.Fatalf("leaf %d verified at the wrong index", i)
		}
	}
}

func TestPolicy(t *testing.T) {
	s, v, _, _ := keys(t, origin)
	var lines []string
	var signers []note.Signer
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("w%d.example", i)
		_, _, skey, vkey := keys(t, name)
		cs, err := fnote.NewSignerForCosignatureV1(skey)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, cs)
		ck, err := fnote.VKeyToCosignatureV1(vkey)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("witness w%d %s https://w%d.example", i, ck, i))
	}
	p, err := checkpoint.ParsePolicy([]byte(strings.Join(lines, "\n") + "\ngroup g 2 w1 w2 w3\nquorum g\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.Witnesses()); n != 3 {
		t.Fatalf("%d witnesses", n)
	}
	msg, _ := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: 1, Hash: tree(1, "e").Hash()}, s)
	cosig := func(i int) []byte {
		b, err := note.Sign(&note.Note{Text: strings.SplitN(string(msg), "\n\n", 2)[0] + "\n"}, signers[i])
		if err != nil {
			t.Fatal(err)
		}
		_, sig, _ := strings.Cut(string(b), "\n\n")
		return []byte(sig)
	}
	one := checkpoint.AddSignatures(msg, cosig(0))
	two := checkpoint.AddSignatures(one, cosig(2), cosig(2))
	if _, err := checkpoint.OpenWithPolicy(one, origin, v, p); !errors.Is(err, checkpoint.ErrNotCosigned) {
		t.Fatalf("1-of-3: %v", err)
	}
	if _, err := checkpoint.OpenWithPolicy(two, origin, v, p); err != nil {
		t.Fatalf("2-of-3: %v", err)
	}
	if strings.Count(string(two), "— w3.example") != 1 {
		t.Fatal("AddSignatures repeated a line")
	}
	if _, err := checkpoint.OpenWithPolicy(msg, origin, v, checkpoint.NoWitnesses()); err != nil {
		t.Fatalf("no witnesses needed: %v", err)
	}
	if _, err := checkpoint.ParsePolicy([]byte("witness w1 junk https://x\nquorum w1\n")); err == nil {
		t.Fatal("a bad policy parsed")
	}
}

func TestNoteTextAndCosign(t *testing.T) {
	s, v, _, _ := keys(t, origin)
	w, wv, _, _ := keys(t, "w.example")
	msg, _ := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: 2, Hash: tree(2, "e").Hash()}, s)
	text, err := checkpoint.NoteText(msg)
	if err != nil || string(text) != fmt.Sprintf("%s\n2\n%s\n", origin, strings.SplitN(string(msg), "\n", 4)[2]) {
		t.Fatalf("NoteText: %q, %v", text, err)
	}
	for _, bad := range []string{"", "no signatures\n", "text\n\n"} {
		if _, err := checkpoint.NoteText([]byte(bad)); !errors.Is(err, checkpoint.ErrMalformed) {
			t.Errorf("NoteText(%q): %v", bad, err)
		}
	}
	cosigned, err := checkpoint.Cosign(msg, w)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cosigned, note.VerifierList(v, wv))
	if err != nil || len(n.Sigs) != 2 {
		t.Fatalf("cosigned note: %v, %d signatures", err, len(n.Sigs))
	}
	if !strings.HasPrefix(string(cosigned), string(msg)) {
		t.Fatal("Cosign changed the signatures already there")
	}
}
