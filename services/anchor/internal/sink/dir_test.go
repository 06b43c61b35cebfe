package sink

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenDirCreatesMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b")
	d, err := OpenDir(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Fatalf("stat %s: %v", path, err)
	}
	if err := d.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("probe files left behind: %v", entries)
	}
}

func TestOpenDirRefusesUnusablePath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, filepath.Join(file, "sub")} {
		_, err := OpenDir(path)
		if err == nil {
			t.Errorf("OpenDir(%s) succeeded on a regular file", path)
			continue
		}
		if !strings.HasPrefix(err.Error(), "--sink-dir "+path+" cannot be created") {
			t.Errorf("OpenDir(%s) = %q", path, err)
		}
	}
}

func TestCheckNoticesRemovedDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "anchors")
	d, err := OpenDir(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(t.Context()); err == nil || !strings.HasPrefix(err.Error(), "--sink-dir "+path+" is not writable: no such file or directory") {
		t.Errorf("Check after removal = %v", err)
	}
}

func TestDirPutGetNeverOverwrites(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	body := []byte(`{"format":"witnz-anchor/v1"}`)
	r, err := d.Put(ctx, "anchor-1.json", body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindDir || r.Key != "anchor-1.json" || r.Size != int64(len(body)) || r.SHA256 != sha256.Sum256(body) {
		t.Fatalf("receipt %+v", r)
	}
	fi, err := os.Stat(filepath.Join(d.Path(), "anchor-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("anchored file has mode %v, want 0444", fi.Mode().Perm())
	}
	if _, err := d.Put(ctx, "anchor-1.json", []byte("forged")); !errors.Is(err, ErrExists) {
		t.Fatalf("second Put of the same key = %v, want ErrExists", err)
	}
	got, err := d.Get(ctx, "anchor-1.json", "")
	if err != nil || string(got) != string(body) {
		t.Fatalf("Get = %q, %v; want the first body", got, err)
	}
	if _, err := d.Get(ctx, "anchor-2.json", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key = %v, want ErrNotFound", err)
	}
	for _, key := range []string{"../x", "a/b", ".hidden", ""} {
		if _, err := d.Put(ctx, key, body); err == nil || !strings.Contains(err.Error(), "one plain file name") {
			t.Errorf("Put(%q) = %v, want a refusal", key, err)
		}
	}
	keys, err := d.List(ctx)
	if err != nil || len(keys) != 1 || keys[0] != "anchor-1.json" {
		t.Fatalf("List = %v, %v", keys, err)
	}
}
