package sink

import (
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
	if err := d.Check(); err != nil {
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
	if err := d.Check(); err == nil || !strings.HasPrefix(err.Error(), "--sink-dir "+path+" is not writable: no such file or directory") {
		t.Errorf("Check after removal = %v", err)
	}
}
