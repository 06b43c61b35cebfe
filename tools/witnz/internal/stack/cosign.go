package stack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/witnz/witnz/libs/checkpoint"
)

// Cluster is the cluster name of a local stack's checkpoint origins.
const Cluster = "local"

// PolicyFile is the checkpoint policy of a local stack, in its cosign
// directory.
const PolicyFile = "policy.txt"

// cosignKeys makes sure every witness has a cosigner key in dir (a key is
// never replaced) and writes the policy a majority of them must meet. It
// returns each witness's flags for cosigning.
func cosignKeys(dir string, witnesses []string) (map[string][]string, error) {
	return CosignKeys(dir, witnesses, CosignFiles{KeyName: "witnz.local/", Writer: "`witnz up`: every witness of the local stack"})
}

// CosignFiles names what CosignKeys writes.
type CosignFiles struct {
	// Prefix goes before "<id>.key" and "<id>.pub".
	Prefix string
	// KeyName goes before the id in each key's name.
	KeyName string
	// Writer says in the policy's comment who wrote it.
	Writer string
}

// CosignKeys makes sure every witness has a cosigner key in dir
// (f.Prefix+"<id>.key" and ".pub"; a key is never replaced) and writes
// PolicyFile, which a majority of them must meet. It returns each
// witness's flags for cosigning.
func CosignKeys(dir string, witnesses []string, f CosignFiles) (map[string][]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var policy strings.Builder
	fmt.Fprintf(&policy, "# Written by %s; a majority must cosign.\n", f.Writer)
	flags := map[string][]string{}
	for _, id := range witnesses {
		keyPath, pubPath := filepath.Join(dir, f.Prefix+id+".key"), filepath.Join(dir, f.Prefix+id+".pub")
		vkey, err := os.ReadFile(pubPath)
		if errors.Is(err, fs.ErrNotExist) {
			skey, pub, err := checkpoint.GenerateKey(f.KeyName + id)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(keyPath, []byte(skey+"\n"), 0o600); err != nil {
				return nil, err
			}
			if err := os.WriteFile(pubPath, []byte(pub+"\n"), 0o644); err != nil {
				return nil, err
			}
			vkey = []byte(pub)
		} else if err != nil {
			return nil, err
		}
		fmt.Fprintf(&policy, "witness %s %s\n", id, strings.TrimSpace(string(vkey)))
		flags[id] = []string{"--cluster", Cluster, "--cosign-key", keyPath, "--policy", filepath.Join(dir, PolicyFile)}
	}
	fmt.Fprintf(&policy, "quorum %d\n", len(witnesses)/2+1)
	if err := os.WriteFile(filepath.Join(dir, PolicyFile), []byte(policy.String()), 0o644); err != nil {
		return nil, err
	}
	return flags, nil
}
