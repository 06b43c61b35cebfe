// Package cli implements the witnz commands. Run is the whole program
// minus signal handling and the exit code, so tests drive it in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// env reads configuration from the environment.
type env func(string) string

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, c *invocation) error
}

// invocation is one run of a command: its arguments and where it reads and
// writes.
type invocation struct {
	args   []string
	getenv env
	stdout io.Writer
	stderr io.Writer
}

var commands = []command{
	{"up", "start the local stack (PostgreSQL, Redis, 3 witnesses, all services) and supervise it", runUp},
	{"down", "stop the local stack started by `witnz up`", runDown},
	{"status", "show witness, table and ingest status through the gateway", runStatus},
	{"alerts", "list (and follow) alerts through the gateway", runAlerts},
	{"pki", "`pki init`: create a development CA and every certificate", runPKI},
	{"keygen", "create a commitment key (32 random bytes, 64 hex characters)", runKeygen},
	{"witness", "`witness keygen|members|rotate|add|remove|transfer-leadership`: cosigning keys and cluster membership", runWitnessGroup},
	{"init", "check PostgreSQL's prerequisites and create the publication and the replication slot", runInit},
	{"protect", "`protect SCHEMA.TABLE [--mode append-only|mutable]`: start protecting a table (baseline + stream)", runProtect},
	{"unprotect", "`unprotect SCHEMA.TABLE --reason TEXT`: stop protecting a table (logged and alerted)", runUnprotect},
	{"accept", "`accept SCHEMA.TABLE --seq N --reason TEXT`: accept a logged UPDATE or DELETE (logged)", runAccept},
	{"proof", "`proof verify BUNDLE --policy FILE`: check an evidence bundle offline", runProof},
	{"verify", "`verify [SCHEMA.TABLE] [--check-anchor [--all]] [--json]`: verify tables against the witnesses, and the logs against their anchors (exit 3 when tampered)", runVerify},
	{"anchor", "`anchor now|list [--json]`: anchor every table's cosigned checkpoint in write-once storage now, or list the anchors", runAnchor},
	{"report", "`report --since DATE [--until DATE] --format md|json [--out FILE]`: compliance report of checkpoints, anchors, verifications and findings", runReport},
}

// Run executes the witnz command line args. Errors are one line naming the
// fix; the caller prints them and exits 1, or with the status of an error's
// ExitCode method (3 for a TamperedError).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("no command given: see the list above")
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return nil
	}
	for _, c := range commands {
		if c.name == name {
			err := c.run(ctx, &invocation{args: args[1:], getenv: getenv, stdout: stdout, stderr: stderr})
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
	}
	return fmt.Errorf("unknown command %q: run `witnz help` for the list", name)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: witnz <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `witnz <command> -h` for the flags of a command.")
}

// flagSet returns a flag set whose -h prints to stdout.
func (c *invocation) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("witnz "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(c.stdout, "Usage: witnz %s %s\n\nFlags:\n", name, synopsis)
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args and rejects positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err // Parse printed the usage; Run turns it into success
		}
		return fmt.Errorf("%v (see `%s -h`)", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see `%s -h`)", fs.Arg(0), fs.Name())
	}
	return nil
}

// listFlag is a repeatable flag that also takes comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// firstNonEmpty returns the first value that is set: flag, then env, then
// the fallback.
func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
