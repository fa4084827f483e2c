package checkpoint

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// NoteText returns the text of a signed note (the checkpoint body, with its
// final newline), checking the note's syntax but no signature. It is for
// code that handles a note whose signatures are checked elsewhere.
func NoteText(msg []byte) ([]byte, error) {
	_, err := note.Open(msg, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return nil, fmt.Errorf("%w: not a signed note", ErrMalformed)
	}
	return []byte(unverified.Note.Text), nil
}

// Cosign returns msg with s's signature over its text appended; the
// signatures already there are kept as they are.
func Cosign(msg []byte, s note.Signer) ([]byte, error) {
	text, err := NoteText(msg)
	if err != nil {
		return nil, err
	}
	signed, err := note.Sign(&note.Note{Text: string(text)}, s)
	if err != nil {
		return nil, err
	}
	return AddSignatures(msg, signed[bytes.LastIndex(signed, []byte("\n\n"))+2:]), nil
}
