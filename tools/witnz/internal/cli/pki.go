package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

func runPKI(ctx context.Context, c *invocation) error {
	if len(c.args) == 0 || c.args[0] != "init" {
		if len(c.args) > 0 && (c.args[0] == "-h" || c.args[0] == "--help" || c.args[0] == "help") {
			fmt.Fprintln(c.stdout, "Usage: witnz pki init [flags]   (see `witnz pki init -h`)")
			return nil
		}
		return fmt.Errorf("pki needs a subcommand: `witnz pki init` (see `witnz pki init -h`)")
	}
	fs := c.flagSet("pki init", "[--dir .witnz/pki] [--witnesses w1,w2,w3] [--host NAME]...")
	dir := fs.String("dir", ".witnz/pki", "directory of the CA and the certificates")
	witnessList := fs.String("witnesses", strings.Join(stack.DefaultWitnesses, ","), "witness node ids (comma-separated)")
	var hosts listFlag
	fs.Var(&hosts, "host", "extra DNS name or IP for every certificate besides localhost and 127.0.0.1 (repeatable)")
	hostname := fs.String("hostname", "", "host name of the host agent's certificate (default: this host's name)")
	if err := parse(fs, c.args[1:]); err != nil {
		return err
	}
	var witnesses listFlag
	witnesses.Set(*witnessList)
	if len(witnesses) == 0 {
		return fmt.Errorf("--witnesses is empty: name at least one witness node, e.g. --witnesses w1,w2,w3")
	}
	if *hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("cannot read this host's name (%v): pass --hostname", err)
		}
		*hostname = h
	}
	ids := stack.Identities(witnesses, *hostname)
	type file struct{ what, path string }
	files := []file{{"CA", filepath.Join(*dir, "ca.crt")}}
	for _, id := range ids {
		files = append(files, file{id.Kind + "/" + id.Name, pki.PathsFor(*dir, id).Cert})
	}
	existed := map[string]bool{}
	for _, f := range files {
		if _, err := os.Stat(f.path); err == nil {
			existed[f.path] = true
		}
	}
	if err := pki.Init(*dir, ids, pki.Options{Hosts: hosts}); err != nil {
		return err
	}
	kept := 0
	for _, f := range files {
		if existed[f.path] {
			kept++
			continue
		}
		fmt.Fprintf(c.stdout, "created %-24s %s\n", f.what, f.path)
	}
	if kept > 0 {
		fmt.Fprintf(c.stdout, "kept %d existing certificate(s) in %s\n", kept, *dir)
	}
	// The witnesses' checkpoint cosigning keys and their policy, next to
	// the certificates, so a deployment from this directory cosigns.
	if _, err := stack.CosignKeys(*dir, witnesses, stack.CosignFiles{Prefix: "cosign-", KeyName: "witnz/", Writer: "`witnz pki init`: every witness node"}); err != nil {
		return fmt.Errorf("cosigning keys in %s: %w", *dir, err)
	}
	fmt.Fprintf(c.stdout, "cosigning keys cosign-<id>.key for %s and the policy %s\n", strings.Join(witnesses, ", "), filepath.Join(*dir, stack.PolicyFile))
	return nil
}

func runKeygen(ctx context.Context, c *invocation) error {
	fs := c.flagSet("keygen", "[--out FILE]")
	out := fs.String("out", "", "write the key to FILE (mode 0600; never overwrites) instead of stdout")
	if err := parse(fs, c.args); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(c.stdout, stack.NewCommitKey())
		return nil
	}
	if err := stack.WriteCommitKey(*out); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote a new commitment key to %s; give it to cdc-ingest and the verifier only (--key-file)\n", *out)
	return nil
}
