package object

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/checkpoint"
)

// signed returns a note of table at size cosigned by k, and a policy
// requiring k.
func signed(t *testing.T, table string, size uint64) (string, *checkpoint.Policy) {
	t.Helper()
	skey, vkey, err := checkpoint.GenerateKey("w1")
	if err != nil {
		t.Fatal(err)
	}
	k, err := checkpoint.NewCosigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	origin, err := checkpoint.Origin("test", table)
	if err != nil {
		t.Fatal(err)
	}
	cp := checkpoint.Checkpoint{Origin: origin, Size: size, Root: [32]byte{1, 2, 3}}
	sig, err := checkpoint.Cosign(cp, k, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	note, err := checkpoint.Assemble(cp, sig)
	if err != nil {
		t.Fatal(err)
	}
	p, err := checkpoint.ParsePolicy([]byte("witness w1 " + vkey + "\nquorum 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	return string(note), p
}

func TestRoundTripAndVerify(t *testing.T) {
	note, p := signed(t, "public.t", 7)
	o := &Object{Format: Format, AnchoredAt: time.Unix(1_700_000_100, 0).UTC(), PolicySHA256: "00", Witnesses: []string{"https://w1:7010"},
		Tables: []Table{{Table: "public.t", Origin: "witnz/test/public.t", Size: 7, Root: "AQIDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", Note: note}}}
	b, err := Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := got.Tables[0].Verify(p)
	if err != nil {
		t.Fatal(err)
	}
	if v.Table != "public.t" || v.Checkpoint.Size != 7 || len(CosignersOf(v.Signers)) != 1 {
		t.Fatalf("verified %+v", v)
	}
	// A field that disagrees with the note is refused.
	got.Tables[0].Size = 8
	if _, err := got.Tables[0].Verify(p); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "size field 8, note 7") {
		t.Fatalf("Verify with a wrong size field = %v", err)
	}
	// A note by a key outside the policy is refused.
	_, other := signed(t, "public.t", 7)
	if _, err := got.Tables[0].Verify(other); err == nil || !strings.Contains(err.Error(), "does not meet the policy") {
		t.Fatalf("Verify under another policy = %v", err)
	}

	for _, tt := range []struct {
		name, body string
		want       error
		text       string
	}{
		{"empty", "", ErrTruncated, "empty"},
		{"truncated", string(b[:len(b)/2]), ErrTruncated, "end in the middle"},
		{"not json", "hello", ErrNotOurs, "does not start with a JSON object"},
		{"other json", `{"kind":"invoice"}`, ErrNotOurs, `no "format" field`},
		{"other format", `{"format":"witnz-anchor/v9"}`, ErrNotOurs, `format "witnz-anchor/v9"`},
		{"unknown field", `{"format":"witnz-anchor/v1","extra":1}`, ErrMalformed, "unknown field"},
		{"no tables", `{"format":"witnz-anchor/v1","tables":[]}`, ErrMalformed, "no tables"},
		{"trailing", string(b) + "{}", ErrMalformed, "data after"},
	} {
		if _, err := Parse([]byte(tt.body)); !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: Parse = %v, want %v containing %q", tt.name, err, tt.want, tt.text)
		}
	}
}

func TestKey(t *testing.T) {
	if got := Key(time.Date(2026, 11, 22, 8, 0, 1, 5, time.UTC)); got != "anchor-20261122T080001.000000005Z.json" {
		t.Fatalf("Key = %s", got)
	}
}
