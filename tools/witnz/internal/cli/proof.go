package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/evidence"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

// runProof dispatches `witnz proof <subcommand>`.
func runProof(ctx context.Context, c *invocation) error {
	if len(c.args) > 0 && c.args[0] == "verify" {
		return runProofVerify(c)
	}
	if len(c.args) > 0 && (c.args[0] == "-h" || c.args[0] == "--help" || c.args[0] == "help") {
		fmt.Fprintln(c.stdout, "Usage: witnz proof verify BUNDLE --policy FILE   (see `witnz proof verify -h`)")
		return nil
	}
	return errors.New("proof needs a subcommand: `witnz proof verify BUNDLE --policy FILE` (see `witnz proof verify -h`)")
}

// runProofVerify checks an evidence bundle offline. The exit status is 0
// when the bundle verifies and 1 when it does not or cannot be checked.
func runProofVerify(c *invocation) error {
	fs := c.flagSet("proof verify", "BUNDLE --policy FILE")
	policyFlag := fs.String("policy", "", "policy file: the witnesses' keys and the quorum (env WITNZ_POLICY; default: the local stack's cosign/policy.txt if there is one)")
	args, err := parseInterspersed(fs, c.args[1:])
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return fmt.Errorf("want exactly one evidence bundle file, got %d argument(s) (see `witnz proof verify -h`)", len(args))
	}
	path := args[0]
	var info stack.Info
	if *policyFlag == "" && c.getenv("WITNZ_POLICY") == "" {
		info, _ = (&gatewayFlags{}).stack(c.getenv) // only for its policy file
	}
	policyPath := policyOrStack(*policyFlag, c.getenv, info)
	if policyPath == "" {
		return errors.New("--policy is required: the policy file that lists the witnesses' keys and the quorum (or set WITNZ_POLICY)")
	}
	policy, err := checkpoint.LoadPolicy(policyPath)
	if err != nil {
		return err
	}
	data, err := readLimited(path, evidence.MaxSize)
	if err != nil {
		return fmt.Errorf("cannot read the evidence bundle: %v", err)
	}
	b, err := evidence.Decode(data)
	if err != nil {
		return fmt.Errorf("bundle %s is INVALID: %v", path, err)
	}
	r, err := evidence.Verify(b, policy)
	if err != nil {
		return fmt.Errorf("bundle %s is INVALID: %v", path, err)
	}
	fmt.Fprint(c.stdout, r.String())
	return nil
}

// parseInterspersed parses flags that may come before or after positional
// arguments, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err // Parse printed the usage; Run turns it into success
			}
			return nil, fmt.Errorf("%v (see `%s -h`)", err, fs.Name())
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// policyOrStack is the policy file given, else WITNZ_POLICY, else the local
// stack's (`witnz up` writes it in its cosign directory), else "".
func policyOrStack(given string, getenv env, info stack.Info) string {
	if p := firstNonEmpty(given, getenv("WITNZ_POLICY")); p != "" || info.Dir == "" {
		return p
	}
	if def := filepath.Join(info.Dir, "cosign", stack.PolicyFile); fileExists(def) {
		return def
	}
	return ""
}
