package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/witnz/witnz/libs/pgbin"
)

// pgInstall is the PostgreSQL installation the clusters run from.
type pgInstall struct {
	binDir  string
	version string // e.g. "15.18"; the full --version line is in versionLine
	major   string // e.g. "15"

	versionLine string

	// runAs is the OS user the server runs as when this process is root
	// (initdb and postgres refuse to run as root); empty otherwise.
	runAs    string
	uid, gid int
	runuser  string
}

var findPostgresOnce = sync.OnceValues(findPostgres)

const pgMissingFix = "run `make deps` (or `apt-get install -y postgresql`)"

var pgVersionRE = regexp.MustCompile(`\(PostgreSQL\) ((\d+)(\.\d+)?)`)

func findPostgres() (*pgInstall, error) {
	binDir, err := pgbin.Dir()
	if err != nil {
		return nil, err
	}
	in := &pgInstall{binDir: binDir}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			return nil, fmt.Errorf("testenv: PostgreSQL install in %s is incomplete (%s missing); %s", binDir, name, pgMissingFix)
		}
	}
	out, err := exec.Command(filepath.Join(binDir, "initdb"), "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("testenv: %s/initdb --version: %v", binDir, err)
	}
	in.versionLine = strings.TrimSpace(string(out))
	m := pgVersionRE.FindStringSubmatch(in.versionLine)
	if m == nil {
		return nil, fmt.Errorf("testenv: cannot parse PostgreSQL version from %q", in.versionLine)
	}
	in.version, in.major = m[1], m[2]

	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("testenv: running as root but there is no OS user %q to run PostgreSQL as (initdb refuses root); %s", "postgres", pgMissingFix)
		}
		in.runAs = u.Username
		in.uid, _ = strconv.Atoi(u.Uid)
		in.gid, _ = strconv.Atoi(u.Gid)
		in.runuser, err = exec.LookPath("runuser")
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/runuser"); serr != nil {
				return nil, fmt.Errorf("testenv: running as root needs runuser (util-linux) to drop to user postgres: %v", err)
			}
			in.runuser = "/usr/sbin/runuser"
		}
	}
	return in, nil
}

// command runs a PostgreSQL binary, as user postgres when we are root.
func (in *pgInstall) command(ctx context.Context, dir, name string, args ...string) *exec.Cmd {
	path := filepath.Join(in.binDir, name)
	var c *exec.Cmd
	if in.runAs != "" {
		c = exec.CommandContext(ctx, in.runuser, append([]string{"-u", in.runAs, "--", path}, args...)...)
	} else {
		c = exec.CommandContext(ctx, path, args...)
	}
	c.Dir = dir
	return c
}

// own hands path to the user the server runs as.
func (in *pgInstall) own(path string) error {
	if in.runAs == "" {
		return nil
	}
	return os.Chown(path, in.uid, in.gid)
}

// initdbArgs are the arguments (after -D DIR) every cluster is created with.
// The template key includes them, so changing them rebuilds the template.
var initdbArgs = []string{"-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"}

func (in *pgInstall) templateKey() string {
	return fmt.Sprintf("%s\n%s\n%s\n", in.binDir, in.versionLine, strings.Join(initdbArgs, " "))
}

// cloneTemplate copies a freshly initdb'ed data directory to dst (which must
// not exist). The first call on the machine runs initdb into
// os.TempDir()/witnz-testenv-pgtemplate-<uid>-<major>; later calls, in this
// process or in other test processes, only copy it. A lock file next to the
// template serialises building it against copying it.
func (in *pgInstall) cloneTemplate(ctx context.Context, dst string) error {
	tmpl := filepath.Join(os.TempDir(), fmt.Sprintf("witnz-testenv-pgtemplate-%d-%s", os.Getuid(), in.major))
	marker, lockPath := tmpl+".ok", tmpl+".lock"

	lf, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open template lock: %w", err)
	}
	defer lf.Close() // releases the flock

	// Shared lock to copy a valid template; exclusive only to (re)build it.
	if err := flock(lf, syscall.LOCK_SH); err != nil {
		return err
	}
	if !in.templateValid(tmpl, marker) {
		if err := flock(lf, syscall.LOCK_EX); err != nil {
			return err
		}
		if !in.templateValid(tmpl, marker) {
			if err := in.buildTemplate(ctx, tmpl, marker); err != nil {
				return err
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copy template %s to %s: %v: %s", tmpl, dst, err, out)
	}
	return nil
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return fmt.Errorf("lock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

func (in *pgInstall) templateValid(tmpl, marker string) bool {
	b, err := os.ReadFile(marker)
	if err != nil || string(b) != in.templateKey() {
		return false
	}
	_, err = os.Stat(filepath.Join(tmpl, "PG_VERSION"))
	return err == nil
}

func (in *pgInstall) buildTemplate(ctx context.Context, tmpl, marker string) error {
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(tmpl); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(filepath.Dir(tmpl), filepath.Base(tmpl)+".build-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	if err := in.own(staging); err != nil {
		return err
	}
	data := filepath.Join(staging, "data")
	args := append([]string{"-D", data}, initdbArgs...)
	if out, err := in.command(ctx, staging, "initdb", args...).CombinedOutput(); err != nil {
		hint := ""
		if in.runAs != "" {
			hint = fmt.Sprintf(" (initdb runs as user %s, which must be able to enter %s)", in.runAs, filepath.Dir(tmpl))
		}
		return fmt.Errorf("initdb %s%s: %v\n%s", strings.Join(args, " "), hint, err, out)
	}
	if err := os.Rename(data, tmpl); err != nil {
		return err
	}
	tmp := marker + ".tmp"
	if err := os.WriteFile(tmp, []byte(in.templateKey()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, marker)
}

// forbiddenSettings are chosen by PostgreSQL() itself and cannot be overridden.
var forbiddenSettings = []string{"port", "listen_addresses", "unix_socket_directories"}

func settingAllowed(name string) bool {
	return !slices.Contains(forbiddenSettings, strings.ToLower(name))
}
