package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/witnz/witnz/libs/pgbin"
)

// Databases of the local stack.
const (
	DemoDatabase  = "witnz_demo"
	AlertDatabase = "witnz_alert"
	// DemoTable is the protected append-only table of the demo database.
	DemoTable = "public.audit_log"
)

const demoTableDDL = `CREATE TABLE IF NOT EXISTS public.audit_log (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	actor text NOT NULL,
	action text NOT NULL,
	detail jsonb
)`

const pgMissingFix = "run `make deps` (or `apt-get install -y postgresql`)"

// postgres is the stack's PostgreSQL cluster.
type postgres struct {
	bin     string // directory of initdb, postgres and pg_ctl
	dataDir string
	runDir  string // unix socket directory
	port    int
	// cred is the postgres OS user when running as root (initdb and the
	// server refuse root); nil otherwise.
	cred *syscall.Credential
}

func newPostgres(dir string, port int) (*postgres, error) {
	bin, err := pgbin.Dir()
	if err != nil {
		return nil, err
	}
	pg := &postgres{bin: bin, dataDir: filepath.Join(dir, "pg"), runDir: filepath.Join(dir, "run"), port: port}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs the OS user postgres to run as (it refuses root): %s", pgMissingFix)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := searchableBy(pg.dataDir, uid, gid); err != nil {
			return nil, err
		}
	}
	return pg, nil
}

// searchableBy checks that user uid/gid can reach path through its parent
// directories: the server runs as postgres and opens its data directory by
// path.
func searchableBy(path string, uid, gid int) error {
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		ok := mode&0o001 != 0 ||
			(int(st.Uid) == uid && mode&0o100 != 0) ||
			(int(st.Gid) == gid && mode&0o010 != 0)
		if !ok {
			return fmt.Errorf("PostgreSQL runs as user postgres and cannot reach %s: %s is not searchable by it; run `chmod o+x %s` or put the stack elsewhere with --dir", path, d, d)
		}
		if d == "/" {
			return nil
		}
	}
}

func (pg *postgres) own(path string) error {
	if pg.cred == nil {
		return nil
	}
	return os.Chown(path, int(pg.cred.Uid), int(pg.cred.Gid))
}

func (pg *postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, name), args...)
	cmd.Dir = pg.runDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	return cmd
}

// initialized reports whether the data directory holds a cluster.
func (pg *postgres) initialized() bool {
	_, err := os.Stat(filepath.Join(pg.dataDir, "PG_VERSION"))
	return err == nil
}

// prepare creates the socket directory and, on first use, the cluster.
func (pg *postgres) prepare(ctx context.Context) error {
	for _, d := range []string{pg.runDir, pg.dataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := pg.own(d); err != nil {
			return fmt.Errorf("hand %s to user postgres: %w", d, err)
		}
	}
	if pg.initialized() {
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := pg.command(ictx, "initdb", "-D", pg.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %v\n%s", pg.dataDir, err, out)
	}
	return nil
}

// spec runs the postmaster in the foreground, so the supervisor is its
// parent and sees it exit.
func (pg *postgres) spec(logPath string) procSpec {
	return procSpec{
		name: "postgres",
		path: filepath.Join(pg.bin, "postgres"),
		args: []string{
			"-D", pg.dataDir,
			"-p", strconv.Itoa(pg.port),
			"-c", "listen_addresses=127.0.0.1",
			"-c", "unix_socket_directories=" + pg.runDir,
			"-c", "wal_level=logical",
			"-c", "max_replication_slots=10",
			"-c", "max_wal_senders=10",
		},
		dir:   pg.runDir,
		log:   logPath,
		cred:  pg.cred,
		ready: pg.ready,
		stop: func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := pg.command(ctx, "pg_ctl", "stop", "-D", pg.dataDir, "-m", "fast", "-w", "-t", "50").CombinedOutput()
			if err != nil {
				return fmt.Errorf("pg_ctl stop -m fast: %v: %s", err, out)
			}
			return nil
		},
	}
}

// DSN is the connection URL of database db as the superuser.
func (pg *postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", pg.port, db)
}

// ready checks that the server answering on the port is this cluster:
// other processes on the machine use fixed ports.
func (pg *postgres) ready(ctx context.Context, _ int) error {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return err
	}
	want, _ := filepath.EvalSymlinks(pg.dataDir)
	if dir != pg.dataDir && dir != want {
		return fmt.Errorf("127.0.0.1:%d is answered by another PostgreSQL (data directory %s)", pg.port, dir)
	}
	return nil
}

// setup creates the demo and alert databases, the demo table and the
// further protected tables.
func (pg *postgres) setup(ctx context.Context, tables []Table) error {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, db := range []string{DemoDatabase, AlertDatabase} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
				return fmt.Errorf("create database %s: %w", db, err)
			}
		}
	}
	demo, err := pgx.Connect(ctx, pg.DSN(DemoDatabase))
	if err != nil {
		return err
	}
	defer demo.Close(context.Background())
	if _, err := demo.Exec(ctx, demoTableDDL); err != nil {
		return fmt.Errorf("create %s: %w", DemoTable, err)
	}
	for _, t := range tables {
		if _, err := demo.Exec(ctx, t.DDL); err != nil {
			return fmt.Errorf("create %s: %w", t.Name, err)
		}
	}
	return nil
}
