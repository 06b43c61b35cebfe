package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

func runUp(ctx context.Context, c *invocation) error {
	fs := c.flagSet("up", "[--dir .witnz] [--bin DIR] [--anchor-interval 60s] [--anchor-s3-bucket B [--anchor-s3-endpoint URL] [--anchor-s3-path-style] [--anchor-s3-region R]]")
	dir := fs.String("dir", ".witnz", "stack directory: PKI, key, PostgreSQL and witness data, logs, stack.json")
	bin := fs.String("bin", "", "directory of the service binaries (default: next to witnz, else bin/ at the repository root)")
	anchorEvery := fs.Duration("anchor-interval", stack.DefaultAnchorInterval, "how often the anchor service anchors every table's checkpoint, and the verifier checks the logs against the anchors")
	s3 := &stack.S3Sink{}
	fs.StringVar(&s3.Bucket, "anchor-s3-bucket", "", "anchor to this S3 bucket (created with Object Lock enabled) instead of the directory <dir>/anchors; credentials from the standard AWS environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...)")
	fs.StringVar(&s3.Endpoint, "anchor-s3-endpoint", "", "base URL of an S3-compatible store, e.g. http://127.0.0.1:9000 (default: AWS)")
	fs.BoolVar(&s3.PathStyle, "anchor-s3-path-style", false, "address the bucket as endpoint/bucket (most S3-compatible stores need it)")
	fs.StringVar(&s3.Region, "anchor-s3-region", "", "region of the bucket (default: the anchor service's, us-east-1)")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *anchorEvery < time.Second {
		return fmt.Errorf("--anchor-interval %s: want at least 1s, e.g. 60s or 24h", *anchorEvery)
	}
	if s3.Bucket == "" && (s3.Endpoint != "" || s3.PathStyle || s3.Region != "") {
		return errors.New("--anchor-s3-endpoint, --anchor-s3-path-style and --anchor-s3-region go with --anchor-s3-bucket: name the bucket (created with Object Lock enabled)")
	}
	if s3.Bucket == "" {
		s3 = nil
	}
	if *bin == "" {
		*bin = defaultBinDir()
	}
	st, err := stack.Start(ctx, stack.Config{Dir: *dir, BinDir: *bin, Out: c.stdout, AnchorInterval: *anchorEvery, AnchorCheckInterval: *anchorEvery, AnchorS3: s3})
	if err != nil {
		return err
	}
	info := st.Info()
	stackFile := filepath.Join(info.Dir, stack.InfoFile)
	w := c.stdout
	fmt.Fprintf(w, "\nwitnz stack is up (supervisor pid %d)\n", info.PID)
	fmt.Fprintf(w, "  gateway     %s (operator certificate %s)\n", info.Gateway, info.TLS.Cert)
	fmt.Fprintf(w, "  postgres    %s\n", info.Postgres.DSN)
	fmt.Fprintf(w, "  stack file  %s\n", stackFile)
	fmt.Fprintf(w, "  logs        %s\n", filepath.Join(info.Dir, "logs"))
	fmt.Fprintf(w, "\nTry it: write a row, tamper with it, see the alert:\n")
	fmt.Fprintf(w, "  psql %q -c \"INSERT INTO audit_log (actor, action) VALUES ('alice', 'login')\"\n", info.Postgres.DSN)
	fmt.Fprintf(w, "  psql %q -c \"UPDATE audit_log SET action='x' WHERE id=1\"\n", info.Postgres.DSN)
	fmt.Fprintf(w, "  bin/witnz alerts --stack %s\n", stackFile)
	where := filepath.Join(info.Dir, "anchors")
	if s3 != nil {
		where = "s3://" + s3.Bucket
	}
	fmt.Fprintf(w, "\nAnchor the logs in %s and check them against the anchors (also done every %s):\n", where, *anchorEvery)
	fmt.Fprintf(w, "  bin/witnz anchor now --stack %s && bin/witnz verify --check-anchor --stack %s\n", stackFile, stackFile)
	fmt.Fprintf(w, "  bin/witnz report --since %s --stack %s\n", time.Now().UTC().Format(time.DateOnly), stackFile)
	fmt.Fprintf(w, "\nCtrl-C (or `witnz down`) stops the stack; its data stays in %s (`make clean-stack` removes it).\n", info.Dir)

	<-ctx.Done()
	fmt.Fprintln(w, "stopping the stack...")
	st.Stop()
	fmt.Fprintln(w, "stack stopped")
	return nil
}

// defaultBinDir is the directory of this executable when the service
// binaries sit beside it (bin/witnz), else bin/ at the repository root
// found from the working directory.
func defaultBinDir() string {
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(d, stack.Binaries[0])); err == nil {
			return d
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "bin"
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, "bin")
		}
		if d == filepath.Dir(d) {
			return filepath.Join(wd, "bin")
		}
	}
}

func runDown(ctx context.Context, c *invocation) error {
	fs := c.flagSet("down", "[--dir .witnz]")
	dir := fs.String("dir", ".witnz", "stack directory given to witnz up")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the stack to stop")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	running, err := stack.Down(ctx, abs, *timeout)
	if err != nil {
		return err
	}
	if !running {
		fmt.Fprintf(c.stdout, "no stack is running in %s\n", abs)
		return nil
	}
	fmt.Fprintf(c.stdout, "stopped the stack in %s\n", abs)
	return nil
}
