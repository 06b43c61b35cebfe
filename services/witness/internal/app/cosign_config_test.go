package app

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/services/witness/internal/config"
)

// TestLoadCosignErrors checks that key, policy and log files that do not
// fit together stop the node with one line naming the flag and the fix.
func TestLoadCosignErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	skey, vkey, _ := checkpoint.GenerateKey("witnz.test/w1")
	_, otherVkey, _ := checkpoint.GenerateKey("witnz.test/w2")
	lskey, lvkey, _ := checkpoint.GenerateLogKey("witnz/test")
	otherLog, _, _ := checkpoint.GenerateLogKey("witnz/other")
	_, extLog, _ := checkpoint.GenerateLogKey("example.com/log")
	key := write("w1.key", skey)
	policy := write("policy", fmt.Sprintf("witness w1 %s\nquorum 1\n", vkey))
	foreign := write("foreign", fmt.Sprintf("witness w2 %s\nquorum 1\n", otherVkey))
	withLog := write("withlog", fmt.Sprintf("log %s\nwitness w1 %s\nquorum 1\n", lvkey, vkey))
	logKey := write("log.key", lskey)
	otherLogKey := write("other.key", otherLog)
	ownOrigin := write("own.logs", "witnz/test/public.t "+extLog+"\n")
	good := write("good.logs", "example.com/log "+extLog+"\n")

	cfg := func(c config.Cosign) config.Config {
		if c.Cluster == "" {
			c.Cluster = "test"
		}
		return config.Config{NodeID: "w1", DataDir: dir, Cosign: c}
	}
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name string
		c    config.Cosign
		want string
	}{
		{"unreadable policy", config.Cosign{PolicyFile: filepath.Join(dir, "missing")}, "--policy: "},
		{"bad policy", config.Cosign{PolicyFile: key}, "--policy " + key},
		{"bad key", config.Cosign{KeyFile: policy, PolicyFile: policy}, "--cosign-key: "},
		{"key not in the policy", config.Cosign{KeyFile: key, PolicyFile: foreign}, "is not a witness of --policy " + foreign + ": add `witness <name> " + vkey + "`"},
		{"policy needs a log key", config.Cosign{KeyFile: key, PolicyFile: withLog}, "requires a log signature (it has `log` lines): give every node the cluster's log key with --log-key"},
		{"log key not in the policy", config.Cosign{KeyFile: key, PolicyFile: withLog, LogKeyFile: otherLogKey}, "--log-key " + otherLogKey + ": key witnz/other is not a log key of --policy"},
		{"witness key as log key", config.Cosign{KeyFile: key, PolicyFile: withLog, LogKeyFile: key}, "--log-key " + key},
		{"own table as external log", config.Cosign{KeyFile: key, PolicyFile: policy, WitnessLogFiles: []string{ownOrigin}}, "origin witnz/test/public.t is a table of this cluster"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadCosign(cfg(tt.c), log)
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
		})
	}
	c, err := loadCosign(cfg(config.Cosign{KeyFile: key, PolicyFile: withLog, LogKeyFile: logKey, WitnessLogFiles: []string{good}}), log)
	if err != nil {
		t.Fatal(err)
	}
	if c.verifierKey() != vkey || c.logSigner == nil || len(c.witnessLogs) != 1 {
		t.Fatalf("loaded %+v", c)
	}
	// A node without a key verifies with its policy but cosigns nothing.
	c, err = loadCosign(cfg(config.Cosign{PolicyFile: withLog}), log)
	if err != nil || c.key != nil || c.policy == nil {
		t.Fatalf("policy only: %+v, %v", c, err)
	}
}
