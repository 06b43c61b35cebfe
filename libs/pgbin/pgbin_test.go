package pgbin

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestDir(t *testing.T) {
	dir, err := Dir()
	if errors.Is(err, ErrNotFound) {
		t.Fatalf("Dir: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
		t.Fatalf("Dir() = %s, which holds no initdb: %v", dir, err)
	}
}
