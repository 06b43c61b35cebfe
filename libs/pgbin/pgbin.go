// Package pgbin finds the PostgreSQL server binaries (initdb, pg_ctl,
// postgres, pgbench) on this machine, for the local stack, the test
// environment and the benchmark harness.
package pgbin

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Preferred is the binary directory of the PostgreSQL version witnz is
// developed and tested against.
const Preferred = "/usr/lib/postgresql/15/bin"

// ErrNotFound means no PostgreSQL server binaries were found; its text names
// the fix.
var ErrNotFound = errors.New("PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb and initdb on PATH): run `make deps` (or `apt-get install -y postgresql`)")

// Dir returns the directory holding initdb: Preferred if present, else the
// newest Debian-packaged major version, else the directory of initdb on
// PATH.
func Dir() (string, error) {
	if _, err := os.Stat(filepath.Join(Preferred, "initdb")); err == nil {
		return Preferred, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestMajor := "", -1
	for _, m := range matches {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if err == nil && major > bestMajor {
			best, bestMajor = filepath.Dir(m), major
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNotFound
}
