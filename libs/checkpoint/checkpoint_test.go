package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testCheckpoint(size uint64) Checkpoint {
	c := Checkpoint{Origin: "witnz/test/public.audit_log", Size: size}
	c.Root = sha256.Sum256([]byte{byte(size)})
	return c
}

func TestTextRoundTrip(t *testing.T) {
	for _, c := range []Checkpoint{
		testCheckpoint(0),
		testCheckpoint(1),
		{Origin: "example.com/behind-the-sofa", Size: 20852163, Root: sha256.Sum256(nil), Extensions: []string{"ext one", "☃"}},
		{Origin: "o", Size: 1<<64 - 1},
	} {
		text, err := c.Text()
		if err != nil {
			t.Fatalf("Text(%+v): %v", c, err)
		}
		got, err := ParseText(text)
		if err != nil {
			t.Fatalf("ParseText(%q): %v", text, err)
		}
		if diff := cmp.Diff(c, got); diff != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", text, diff)
		}
	}
	// The example of C2SP tlog-checkpoint.
	c := Checkpoint{Origin: "example.com/behind-the-sofa", Size: 20852163}
	copy(c.Root[:], mustBase64(t, "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
	text, err := c.Text()
	if want := "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"; err != nil || string(text) != want {
		t.Errorf("Text() = %q, %v; want %q", text, err, want)
	}
}

func TestParseTextRejects(t *testing.T) {
	root := "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
	for _, tc := range []struct {
		text, want string
	}{
		{"o\n1\n" + root, "newline"},
		{"o\n1\n", "want origin, size and root"},
		{"\n1\n" + root + "\n", "origin line: empty"},
		{"o\x01\n1\n" + root + "\n", "control character"},
		{"o\xff\n1\n" + root + "\n", "invalid UTF-8"},
		{"o\n01\n" + root + "\n", "leading zero"},
		{"o\n+1\n" + root + "\n", "not a decimal"},
		{"o\n-1\n" + root + "\n", "not a decimal"},
		{"o\n 1\n" + root + "\n", "not a decimal"},
		{"o\n\n" + root + "\n", "size line"},
		{"o\n18446744073709551616\n" + root + "\n", "out of range"},
		{"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2=\n", "root line"},  // 31 bytes
		{"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", "root line"}, // non-zero trailing bits
		{"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "root line"},  // no padding
		{"o\n1\nCsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\n", "root line"}, // URL alphabet
		{"o\n1\n" + root + "\n\n", "extension line 1: empty"},
		{"o\n1\n" + root + "\next\n\n", "extension line 2: empty"},
	} {
		_, err := ParseText([]byte(tc.text))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseText(%q) = %v, want ErrMalformed containing %q", tc.text, err, tc.want)
		}
	}
}

func TestTextRejectsBadLines(t *testing.T) {
	for _, c := range []Checkpoint{
		{Origin: ""},
		{Origin: "a\nb"},
		{Origin: "o", Extensions: []string{""}},
		{Origin: "o", Extensions: []string{"a\nb"}},
	} {
		if _, err := c.Text(); !errors.Is(err, ErrMalformed) {
			t.Errorf("Text(%+v) = %v, want ErrMalformed", c, err)
		}
	}
}

func TestOrigin(t *testing.T) {
	for _, tc := range []struct {
		cluster, table, want string
	}{
		{"prod", "public.audit_log", "witnz/prod/public.audit_log"},
		{"eu-1.example", "Sales.Orders$2", "witnz/eu-1.example/Sales.Orders$2"},
		{"c", "public.Ünïcödé", "witnz/c/public.Ünïcödé"},
		{"c", "my schema.a+b%c", "witnz/c/my%20schema.a%2Bb%25c"},
		{"c", "s.tab\nle\t", "witnz/c/s.tab%0Ale%09"},
		{"c", "s.a\u00a0b", "witnz/c/s.a%C2%A0b"}, // no-break space
		{"c", "s.a/b", "witnz/c/s.a/b"},
		{"c", "s.\xff", "witnz/c/s.%FF"},
	} {
		got, err := Origin(tc.cluster, tc.table)
		if err != nil || got != tc.want {
			t.Errorf("Origin(%q, %q) = %q, %v; want %q", tc.cluster, tc.table, got, err, tc.want)
			continue
		}
		if err := checkLine(got); err != nil {
			t.Errorf("origin %q is not a valid note line: %v", got, err)
		}
		cluster, table, err := ParseOrigin(got)
		if err != nil || cluster != tc.cluster || table != tc.table {
			t.Errorf("ParseOrigin(%q) = %q, %q, %v; want %q, %q", got, cluster, table, err, tc.cluster, tc.table)
		}
	}
	for _, bad := range [][2]string{{"", "t"}, {"a/b", "t"}, {"a b", "t"}, {"c", ""}, {strings.Repeat("x", 65), "t"}} {
		if _, err := Origin(bad[0], bad[1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("Origin(%q, %q) = %v, want ErrMalformed", bad[0], bad[1], err)
		}
	}
	for _, bad := range []string{
		"example.com/log", "witnz/prod", "witnz//t", "witnz/prod/", "witnz/pr od/t",
		"witnz/c/%41", "witnz/c/a%2b", "witnz/c/a%2", "witnz/c/a%zz", "witnz/c/a b", "witnz/c/a+b",
	} {
		if _, _, err := ParseOrigin(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseOrigin(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestAssembleParseAddSignatures(t *testing.T) {
	c := testCheckpoint(7)
	w1, w2 := mustCosigner(t, "w1.example"), mustCosigner(t, "w2.example")
	s1 := mustCosign(t, c, w1, 100)
	s2 := mustCosign(t, c, w2, 200)
	signed, err := Assemble(c, s1, s2, s1)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(signed, []byte("\n— ")); n != 2 {
		t.Errorf("assembled note has %d signature lines, want 2 (identical repeats dropped):\n%s", n, signed)
	}
	got, sigs, err := Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("Parse checkpoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{s1.Base64, s2.Base64}, []string{sigs[0].Base64, sigs[1].Base64}); diff != "" {
		t.Errorf("Parse signatures (-want +got):\n%s", diff)
	}

	// A newer cosignature by w1 replaces the old one; others stay.
	s1b := mustCosign(t, c, w1, 300)
	again, err := AddSignatures(signed, s1b)
	if err != nil {
		t.Fatal(err)
	}
	_, sigs, err = Parse(again)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 2 || sigs[0].Base64 != s2.Base64 || sigs[1].Base64 != s1b.Base64 {
		t.Errorf("AddSignatures: got %+v, want w2's then w1's newer signature", sigs)
	}

	if _, err := Assemble(c); !errors.Is(err, ErrMalformed) {
		t.Errorf("Assemble without signatures = %v, want ErrMalformed", err)
	}
	if _, err := Assemble(c, s1, s1b); !errors.Is(err, ErrMalformed) {
		t.Errorf("Assemble with two signatures by one key = %v, want ErrMalformed", err)
	}
	bad := s1
	bad.Hash++
	if _, err := Assemble(c, bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("Assemble with a hash not matching the signature = %v, want ErrMalformed", err)
	}
}

func TestParseRejects(t *testing.T) {
	c := testCheckpoint(3)
	w1 := mustCosigner(t, "w1.example")
	s1 := mustCosign(t, c, w1, 100)
	signed, err := Assemble(c, s1)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := c.Text()
	line := "— " + s1.Name + " " + s1.Base64 + "\n"
	other := mustCosign(t, c, w1, 101)
	for _, tc := range []struct {
		name, note, want string
	}{
		{"no blank line", string(text) + line, "blank line"},
		{"no signatures", string(text) + "\n", "no signature lines"},
		{"no final newline", strings.TrimSuffix(string(signed), "\n"), "does not end"},
		{"hyphen instead of em dash", string(text) + "\n- " + s1.Name + " " + s1.Base64 + "\n", "does not start"},
		{"no space", string(text) + "\n— " + s1.Name + "\n", "not \"— <name> <base64>\""},
		{"bad base64", string(text) + "\n— " + s1.Name + " " + s1.Base64[1:] + "\n", "base64"},
		{"short", string(text) + "\n— " + s1.Name + " AAAA\n", "too short"},
		{"name with plus", string(text) + "\n— a+b " + s1.Base64 + "\n", "key name"},
		{"control character", string(signed[:3]) + "\r" + string(signed[3:]), "control character"},
		{"tab", strings.Replace(string(signed), " ", "\t", 1), "control character"},
		{"invalid UTF-8", string(signed) + "\xff", "UTF-8"},
		{"non-canonical size", strings.Replace(string(signed), "\n3\n", "\n03\n", 1), "leading zero"},
		{"two signatures by one key", string(signed) + "— " + other.Name + " " + other.Base64 + "\n", "second, different signature"},
		{"too many", string(text) + "\n" + strings.Repeat(line, 101), "at most 100"},
	} {
		if _, _, err := Parse([]byte(tc.note)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want ErrMalformed containing %q", tc.name, err, tc.want)
		}
	}
	// An identical repeated line is tolerated and dropped.
	_, sigs, err := Parse(append(signed, line...))
	if err != nil || len(sigs) != 1 {
		t.Errorf("repeated identical line: %d signatures, %v; want 1, nil", len(sigs), err)
	}
}
