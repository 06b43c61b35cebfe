// Package config reads the benchmark harness's flags and environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Config of one benchmark run.
type Config struct {
	// Rows to run, upper-case ids (B1…B10); empty means all.
	Rows []string
	// Quick runs every row briefly (the whole run in under three minutes).
	Quick bool
	// Repo is the repository root.
	Repo string
	// Bin holds witnz and the service binaries.
	Bin string
	// Out receives latest.json and latest.md.
	Out string
	// Work is the scratch directory (stacks, PostgreSQL clusters).
	Work string
	// Keep leaves the scratch directory of the run in place.
	Keep bool
}

// Parse reads args and the environment; flags win over the environment.
func Parse(args []string, getenv func(string) string, known []string) (Config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var c Config
	rows := fs.String("rows", getenv("WITNZ_BENCH_ROWS"), "comma-separated rows to run, e.g. B1,B4 (env WITNZ_BENCH_ROWS; default all)")
	fs.BoolVar(&c.Quick, "quick", getenv("WITNZ_BENCH_QUICK") != "", "short runs, under three minutes in total (env WITNZ_BENCH_QUICK)")
	fs.StringVar(&c.Repo, "repo", ".", "repository root")
	fs.StringVar(&c.Bin, "bin", "bin", "directory of witnz and the service binaries (make build)")
	fs.StringVar(&c.Out, "out", "bench/results", "directory for latest.json and latest.md")
	fs.StringVar(&c.Work, "work", "", "scratch directory (default OUT/tmp)")
	fs.BoolVar(&c.Keep, "keep", false, "keep the scratch directory of the run (stack logs, PostgreSQL data)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.PrintDefaults()
			return Config{}, fmt.Errorf("usage: bench [flags]\n%s", b.String())
		}
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: rows are chosen with --rows B1,B2", fs.Arg(0))
	}
	for r := range strings.SplitSeq(*rows, ",") {
		r = strings.ToUpper(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		if !slices.Contains(known, r) {
			return Config{}, fmt.Errorf("--rows: unknown row %q: the rows are %s", r, strings.Join(known, ", "))
		}
		if !slices.Contains(c.Rows, r) {
			c.Rows = append(c.Rows, r)
		}
	}
	if c.Work == "" {
		c.Work = filepath.Join(c.Out, "tmp")
	}
	for _, p := range []*string{&c.Repo, &c.Bin, &c.Out, &c.Work} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return Config{}, err
		}
		*p = abs
	}
	return c, nil
}

// Validate checks that the binaries the rows start are built.
func (c Config) Validate() error {
	for _, name := range []string{"witnz", "witness", "cdc-ingest", "alert", "gateway"} {
		if _, err := os.Stat(filepath.Join(c.Bin, name)); err != nil {
			return fmt.Errorf("--bin %s has no %s: run `make build` (make bench does)", c.Bin, name)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Repo, "go.work")); err != nil {
		return fmt.Errorf("--repo %s is not the repository root (no go.work): run from the root or pass --repo", c.Repo)
	}
	return nil
}
