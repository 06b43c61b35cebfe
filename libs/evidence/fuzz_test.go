package evidence

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecode: Decode never panics; what it accepts encodes and decodes to
// the same bundle; Verify of it never panics and errors wrap ErrInvalid.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"bundle.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"witnz-evidence/v1","table":"t","index":0,"entry":"","inclusion_proof":[],"checkpoint":""}`))
	fx := newFixture(f)
	p := fx.mustPolicy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("Decode error does not wrap ErrDecode: %v", err)
			}
			return
		}
		enc, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("Decode(Encode(b)): %v", err)
		}
		if diff := cmp.Diff(b, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		if _, err := Verify(b, p); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Verify error does not wrap ErrInvalid: %v", err)
		}
	})
}
