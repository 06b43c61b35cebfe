package config

import (
	"flag"
	"fmt"
	"net/url"
	"regexp"
	"strings"
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
	// ExternalWitnessFlags are the --external-witness values,
	// NAME=URL[,VKEY]; ExternalWitnessKeyFlags the --external-witness-key
	// values, NAME=FILE. ExternalWitnesses reads them.
	ExternalWitnessFlags    []string
	ExternalWitnessKeyFlags []string
}

// ExternalWitness is a C2SP tlog-witness the leader asks to cosign the
// cluster's checkpoints after its own quorum did.
type ExternalWitness struct {
	// Name labels it in logs and flags.
	Name string
	// URL is its prefix (https://host[:port][/path]); requests go to
	// URL/add-checkpoint.
	URL string
	// VerifierKey is its cosignature verifier key, given inline; KeyFile
	// names a file holding it otherwise.
	VerifierKey string
	KeyFile     string
}

// ExternalWitnesses parses --external-witness and --external-witness-key.
func (c Cosign) ExternalWitnesses() ([]ExternalWitness, error) {
	const form = "want NAME=URL[,VKEY], e.g. --external-witness ext=https://witness.example:443,ext+1234abcd+AQ... (or give the key with --external-witness-key NAME=FILE)"
	var out []ExternalWitness
	index := map[string]int{}
	for _, raw := range c.ExternalWitnessFlags {
		name, rest, ok := strings.Cut(raw, "=")
		name = strings.TrimSpace(name)
		if !ok || !clusterPattern.MatchString(name) {
			return nil, fmt.Errorf("--external-witness %q: %s", raw, form)
		}
		u, vkey, _ := strings.Cut(rest, ",")
		u, vkey = strings.TrimSpace(u), strings.TrimSpace(vkey)
		if err := validateWitnessURL(u); err != nil {
			return nil, fmt.Errorf("--external-witness %s: %v (%s)", name, err, form)
		}
		if _, dup := index[name]; dup {
			return nil, fmt.Errorf("--external-witness %s is listed twice: give each external witness once", name)
		}
		index[name] = len(out)
		out = append(out, ExternalWitness{Name: name, URL: u, VerifierKey: vkey})
	}
	for _, raw := range c.ExternalWitnessKeyFlags {
		name, file, ok := strings.Cut(raw, "=")
		name, file = strings.TrimSpace(name), strings.TrimSpace(file)
		i, known := index[name]
		switch {
		case !ok || file == "":
			return nil, fmt.Errorf("--external-witness-key %q: want NAME=FILE, the file holding the verifier key of --external-witness NAME", raw)
		case !known:
			return nil, fmt.Errorf("--external-witness-key %s: no --external-witness named %s", raw, name)
		case out[i].VerifierKey != "":
			return nil, fmt.Errorf("--external-witness-key %s: the key of %s is already given inline in --external-witness", raw, name)
		}
		out[i].KeyFile = file
	}
	for _, w := range out {
		if w.VerifierKey == "" && w.KeyFile == "" {
			return nil, fmt.Errorf("--external-witness %s has no verifier key: append ,VKEY to it or give --external-witness-key %s=FILE", w.Name, w.Name)
		}
	}
	return out, nil
}

// validateWitnessURL accepts an https URL without query or credentials.
func validateWitnessURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q is not an https:// URL", raw)
	}
	return nil
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
	svcconfig.ListVarSep(fs, getenv, &c.ExternalWitnessFlags, "external-witness", "WITNZ_EXTERNAL_WITNESSES", ";", "NAME=URL[,VKEY] of a C2SP tlog-witness the leader asks to cosign each checkpoint after the nodes' quorum (needs --log-key), repeatable (env WITNZ_EXTERNAL_WITNESSES, ';'-separated); the policy may require its key")
	svcconfig.ListVar(fs, getenv, &c.ExternalWitnessKeyFlags, "external-witness-key", "WITNZ_EXTERNAL_WITNESS_KEYS", "NAME=FILE: the file holding the cosignature verifier key of --external-witness NAME")
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
	ext, err := c.ExternalWitnesses()
	if err != nil {
		return err
	}
	if len(ext) > 0 && (c.LogKeyFile == "" || c.KeyFile == "") {
		return fmt.Errorf("--external-witness %s needs --cosign-key and --log-key: external witnesses cosign only checkpoints signed with the cluster's log key", ext[0].Name)
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
