package stack

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/witnz/witnz/libs/mtls"
)

// Services are the witnz services the stack runs besides the witnesses, in
// start order.
var services = []string{"alert", "cdc-ingest", "gateway", "verifier", "anchor", "host-agent"}

// DefaultWitnesses are the witness node ids of a local stack.
var DefaultWitnesses = []string{"w1", "w2", "w3"}

// Identities lists every identity a deployment with these witnesses and
// this host needs a certificate for: the services, the witness nodes, the
// operator and the host agent.
func Identities(witnesses []string, hostname string) []mtls.Identity {
	ids := []mtls.Identity{}
	for _, name := range []string{"cdc-ingest", "alert", "gateway", "verifier", "anchor"} {
		ids = append(ids, mtls.Service(name))
	}
	for _, w := range witnesses {
		ids = append(ids, mtls.Witness(w))
	}
	return append(ids, Operator, mtls.Identity{Kind: mtls.KindAgent, Name: hostname})
}

// Operator is the identity of the witnz CLI.
var Operator = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}

// ErrKeyExists means a key file is already there; keys are never
// overwritten, since replacing K orphans every commitment made with it.
var ErrKeyExists = errors.New("key file already exists")

// WriteCommitKey writes a new random commitment key (32 bytes as 64 hex
// characters) to path with mode 0600. It refuses to overwrite a file.
func WriteCommitKey(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s (delete it yourself if you really mean to replace the deployment key)", ErrKeyExists, path)
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(NewCommitKey() + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// NewCommitKey returns 32 random bytes as 64 hex characters.
func NewCommitKey() string {
	var k [32]byte
	rand.Read(k[:]) // never fails on Linux
	return hex.EncodeToString(k[:])
}
