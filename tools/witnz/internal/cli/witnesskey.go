package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/witnz/witnz/libs/checkpoint"
)

// runWitness dispatches `witnz witness <subcommand>`.
func runWitness(ctx context.Context, c *invocation) error {
	if len(c.args) > 0 && c.args[0] == "keygen" {
		return runWitnessKeygen(c)
	}
	if len(c.args) > 0 && (c.args[0] == "-h" || c.args[0] == "--help" || c.args[0] == "help") {
		fmt.Fprintln(c.stdout, "Usage: witnz witness keygen --name NAME --out DIR   (see `witnz witness keygen -h`)")
		return nil
	}
	return errors.New("witness needs a subcommand: `witnz witness keygen --name NAME --out DIR` (see `witnz witness keygen -h`)")
}

// runWitnessKeygen writes a new cosignature/v1 key pair: DIR/<file>.key (the
// private key string, mode 0600) and DIR/<file>.pub (the verifier key).
func runWitnessKeygen(c *invocation) error {
	fs := c.flagSet("witness keygen", "--name NAME --out DIR")
	name := fs.String("name", "", "key name written on the witness's cosignature lines, e.g. witnz.example.com/w1 (no spaces or '+')")
	out := fs.String("out", "", "directory to write NAME.key (private, mode 0600) and NAME.pub into; created if missing; existing files are never replaced")
	if err := parse(fs, c.args[1:]); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required: the witness key's name, e.g. --name witnz.example.com/w1")
	}
	if *out == "" {
		return errors.New("--out is required: the directory to write the key files into, e.g. --out /etc/witnz/witness")
	}
	skey, vkey, err := checkpoint.GenerateKey(*name)
	if err != nil {
		return fmt.Errorf("--name: %v", err)
	}
	base := keyFileBase(*name)
	keyPath := filepath.Join(*out, base+".key")
	pubPath := filepath.Join(*out, base+".pub")
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists: witness keys are never replaced (remove it first, or pick another --out)", p)
		}
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("cannot create --out directory: %v", err)
	}
	if err := writeNew(keyPath, skey+"\n", 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, vkey+"\n", 0o644); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "wrote the private key %s (mode 0600): give it to this witness node only\n", keyPath)
	fmt.Fprintf(c.stdout, "wrote the verifier key %s\n", pubPath)
	fmt.Fprintf(c.stdout, "policy line: witness %s %s\n", base, vkey)
	return nil
}

// keyFileBase turns a key name into a file name: characters other than
// letters, digits, '.', '_' and '-' become '_'.
func keyFileBase(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, name)
}

// writeNew creates path with content, failing if it exists.
func writeNew(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("cannot create key file: %v", err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %v", path, err)
	}
	return nil
}
