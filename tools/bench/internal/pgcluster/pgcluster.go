// Package pgcluster runs a bare PostgreSQL cluster for the baselines: the
// same binaries and the same settings as the local stack's PostgreSQL
// (`witnz up`), with nothing of witnz attached.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/witnz/witnz/libs/pgbin"
)

// Settings are the server settings `witnz up` starts its PostgreSQL with,
// so a baseline differs from the measured stack only by witnz.
var Settings = []string{
	"listen_addresses=127.0.0.1",
	"wal_level=logical",
	"max_replication_slots=10",
	"max_wal_senders=10",
}

// Cluster is a running PostgreSQL cluster owned by this process.
type Cluster struct {
	bin  string
	dir  string // data directory
	run  string // socket directory
	port int
	cred *syscall.Credential
}

// Start creates a cluster in dir (which must not hold one) and starts it on
// a free port.
func Start(ctx context.Context, dir string) (*Cluster, error) {
	bin, err := pgbin.Dir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: filepath.Join(dir, "data"), run: filepath.Join(dir, "run")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("running as root, PostgreSQL needs the OS user postgres (it refuses root): run `make deps`")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	for _, d := range []string{dir, c.dir, c.run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		if c.cred != nil {
			if err := os.Chown(d, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	if out, err := c.command(ctx, "initdb", "-D", c.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb %s: %v\n%s", c.dir, err, out)
	}
	for attempt := 0; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return nil, err
		}
		err = c.start(ctx)
		if err == nil {
			return c, nil
		}
		if attempt == 4 {
			return nil, err
		}
	}
}

func (c *Cluster) start(ctx context.Context) error {
	opts := []string{"-p " + strconv.Itoa(c.port), "-c unix_socket_directories=" + c.run}
	for _, s := range Settings {
		opts = append(opts, "-c "+s)
	}
	logFile := filepath.Join(filepath.Dir(c.dir), "postgres.log")
	out, err := c.command(ctx, "pg_ctl", "-D", c.dir, "-l", logFile, "-w", "-t", "60", "-o", strings.Join(opts, " "), "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start on port %d: %v\n%s\n%s", c.port, err, out, tailOf(log, 1500))
	}
	// Other processes on the machine use fixed ports: make sure the server
	// answering is this one.
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		_ = c.Stop(context.Background())
		return fmt.Errorf("connect to the new cluster on port %d: %w", c.port, err)
	}
	defer conn.Close(context.Background())
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil || dataDir != c.dir {
		return fmt.Errorf("port %d answered by another PostgreSQL (data directory %q)", c.port, dataDir)
	}
	return nil
}

// DSN is the URL of database db as the superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// PID is the postmaster's pid (0 when unknown).
func (c *Cluster) PID() int {
	b, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// Bin is the directory of the server binaries (pgbench is there too).
func (c *Cluster) Bin() string { return c.bin }

// Stop shuts the cluster down (fast mode).
func (c *Cluster) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := c.command(ctx, "pg_ctl", "-D", c.dir, "-m", "fast", "-w", "stop").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.run
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tailOf(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
