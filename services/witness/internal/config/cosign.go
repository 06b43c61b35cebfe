package config

import (
	"flag"
	"fmt"
	"regexp"
	"time"

	"github.com/witnz/witnz/libs/svcconfig"
)

// Defaults of the cosigning flags.
const (
	DefaultCluster            = "default"
	DefaultCheckpointInterval = 10 * time.Second
)

// Cosign configures cosigned checkpoints (docs/design/0009-cosigning.md).
// Every file is read, and every key checked, when the node starts.
type Cosign struct {
	// Cluster names the cluster in checkpoint origins,
	// witnz/<cluster>/<schema>.<table>. Every node must use the same name.
	Cluster string
	// KeyFile holds this node's cosigner private key (`witnz witness
	// keygen`). Without it the node cosigns nothing, and makes no
	// checkpoints while it leads.
	KeyFile string
	// PolicyFile is the checkpoint policy (libs/checkpoint): the witness
	// keys and the k-of-n quorum, and optional log keys. Every node must
	// use the same file.
	PolicyFile string
	// LogKeyFile holds the cluster's log signing key (type 0x01), the same
	// on every node; optional unless the policy names log keys.
	LogKeyFile string
	// Interval is how often the leader checkpoints the tables whose log
	// grew.
	Interval time.Duration
	// AlertURL is the alert service (https://host:port); empty logs
	// disagreements only.
	AlertURL string
	// WitnessLogFiles list the external logs this node cosigns for through
	// the C2SP tlog-witness add-checkpoint endpoint.
	WitnessLogFiles []string
}

var clusterPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *Cosign) register(fs *flag.FlagSet, getenv func(string) string, interval *string) {
	str := func(p *string, name, env, def, help string) {
		svcconfig.StringVar(fs, getenv, p, name, env, def, help)
	}
	str(&c.Cluster, "cluster", "WITNZ_CLUSTER", DefaultCluster, "cluster name in checkpoint origins witnz/<cluster>/<schema.table>; the same on every node")
	str(&c.KeyFile, "cosign-key", "WITNZ_COSIGN_KEY", "", "file with this node's cosigner private key (`witnz witness keygen`); without it the node neither cosigns nor makes checkpoints")
	str(&c.PolicyFile, "policy", "WITNZ_POLICY", "", "checkpoint policy file: witness keys and k-of-n quorum (docs/design/0005); the same on every node")
	str(&c.LogKeyFile, "log-key", "WITNZ_LOG_KEY", "", "file with the cluster's log signing key (a type 0x01 note key), the same on every node; required when the policy names log keys")
	str(interval, "checkpoint-interval", "WITNZ_CHECKPOINT_INTERVAL", DefaultCheckpointInterval.String(), "how often the leader checkpoints every table whose log grew")
	str(&c.AlertURL, "alert", "WITNZ_ALERT", "", "alert service URL https://host:port for cosigning disagreements (default: log only)")
	svcconfig.ListVar(fs, getenv, &c.WitnessLogFiles, "witness-log", "WITNZ_WITNESS_LOGS", "file naming an external log this node cosigns for over C2SP tlog-witness add-checkpoint: lines `<origin> <log verifier key>...`")
}

// parseInterval sets Interval from the --checkpoint-interval value.
func (c *Cosign) parseInterval(raw string) error {
	d, err := time.ParseDuration(raw)
	if err != nil || d < time.Second || d > 24*time.Hour {
		return fmt.Errorf("--checkpoint-interval %q: want a duration between 1s and 24h, e.g. --checkpoint-interval 10s", raw)
	}
	c.Interval = d
	return nil
}

// Validate checks the cosigning settings.
func (c Cosign) Validate() error {
	if !clusterPattern.MatchString(c.Cluster) {
		return fmt.Errorf("--cluster %q must be 1-64 letters, digits, '.', '_' or '-' (it names the cluster in checkpoint origins), e.g. --cluster prod", c.Cluster)
	}
	if c.KeyFile != "" && c.PolicyFile == "" {
		return fmt.Errorf("--cosign-key %s needs --policy: the checkpoint policy that lists this node's key and the quorum", c.KeyFile)
	}
	if c.LogKeyFile != "" && c.KeyFile == "" {
		return fmt.Errorf("--log-key %s needs --cosign-key: only a cosigning node makes checkpoints", c.LogKeyFile)
	}
	if len(c.WitnessLogFiles) > 0 && c.KeyFile == "" {
		return fmt.Errorf("--witness-log needs --cosign-key: the key this node cosigns other logs' checkpoints with")
	}
	if c.Interval != 0 && (c.Interval < time.Second || c.Interval > 24*time.Hour) {
		return fmt.Errorf("--checkpoint-interval %s: want a duration between 1s and 24h", c.Interval)
	}
	if c.AlertURL != "" {
		if err := svcconfig.ValidateURL("--alert", c.AlertURL); err != nil {
			return err
		}
	}
	return nil
}
