package checkpoint

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// FuzzParse: Parse never panics; what it accepts, note.Open accepts as
// well-formed too, and assembling it again gives a note Parse reads the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n— k AAAAAAA=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, sigs, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		var unverified *note.UnverifiedNoteError
		if _, err := note.Open(b, note.VerifierList()); !errors.As(err, &unverified) {
			t.Fatalf("Parse accepted a note that note.Open calls %v", err)
		}
		again, err := Assemble(c, sigs...)
		if err != nil {
			t.Fatalf("Assemble of a parsed note: %v", err)
		}
		lines := bytes.Count(b[bytes.LastIndex(b, []byte("\n\n"))+2:], []byte("\n"))
		if len(sigs) == lines && !bytes.Equal(again, b) {
			t.Fatalf("round trip changed the note:\n%q\n%q", b, again)
		}
		if _, _, err := Parse(again); err != nil {
			t.Fatalf("Parse of an assembled note: %v", err)
		}
	})
}

// FuzzParsePolicy: ParsePolicy never panics and errors wrap ErrPolicy.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("witness w1 w1+00000000+BAAA\nquorum 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("ParsePolicy error does not wrap ErrPolicy: %v", err)
			}
			return
		}
		if p.Describe() == "" {
			t.Fatal("accepted policy describes nothing")
		}
	})
}

// FuzzPolicyVerify: verification never panics, and never accepts a note
// that Parse rejects.
func FuzzPolicyVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, policy, signed []byte) {
		p, err := ParsePolicy(policy)
		if err != nil {
			return
		}
		if _, _, err := p.Verify(signed); err == nil {
			if _, _, perr := Parse(signed); perr != nil {
				t.Fatalf("Verify accepted a note Parse rejects: %v", perr)
			}
		}
	})
}

// FuzzParseOrigin: an accepted origin is exactly what Origin builds.
func FuzzParseOrigin(f *testing.F) {
	f.Add("witnz/c/s.t")
	f.Fuzz(func(t *testing.T, origin string) {
		cluster, table, err := ParseOrigin(origin)
		if err != nil {
			return
		}
		again, err := Origin(cluster, table)
		if err != nil || again != origin {
			t.Fatalf("Origin(ParseOrigin(%q)) = %q, %v", origin, again, err)
		}
		if err := checkLine(origin); err != nil {
			t.Fatalf("accepted origin %q is not a note line: %v", origin, err)
		}
	})
}
