package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/witness/internal/config"
	"github.com/witnz/witnz/services/witness/internal/cosign"
	"github.com/witnz/witnz/services/witness/internal/fsm"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// testHookReplica, set by tests, replaces the replica a node's cosigner
// checks proposals against (to play a node whose state was altered).
var testHookReplica func(nodeID string, r cosign.Replica) cosign.Replica

// cosigning is the node's part in cosigned checkpoints: its key, the
// policy, the cosigner it serves, the coordinator it runs while it leads,
// and the add-checkpoint endpoint.
type cosigning struct {
	cfg          config.Cosign
	nodeID       string
	dataDir      string
	log          *slog.Logger
	key          *checkpoint.Cosigner
	policy       *checkpoint.Policy
	policyDigest [sha256.Size]byte
	logSigner    note.Signer
	witnessLogs  []cosign.WitnessLog
	external     []cosign.ExternalWitness

	store  *cosign.Store
	alerts *cosign.Alerter
	signer *cosign.Signer
	coord  *cosign.Coordinator
}

// loadCosign reads the files the cosigning flags name and checks that they
// fit together, before Raft starts.
func loadCosign(cfg config.Config, log *slog.Logger) (*cosigning, error) {
	c := &cosigning{cfg: cfg.Cosign, nodeID: cfg.NodeID, dataDir: cfg.DataDir, log: log.With("component", "cosign")}
	cc := cfg.Cosign
	logKeys := false
	if cc.PolicyFile != "" {
		text, err := os.ReadFile(cc.PolicyFile)
		if err != nil {
			return nil, fmt.Errorf("--policy: %v", err)
		}
		p, err := checkpoint.ParsePolicy(text)
		if err != nil {
			return nil, fmt.Errorf("--policy %s: %v", cc.PolicyFile, err)
		}
		c.policy, c.policyDigest = p, cosign.PolicyDigest(text)
		logKeys = policyHasLogKeys(text)
		if cc.KeyFile != "" && logKeys && cc.LogKeyFile == "" {
			return nil, fmt.Errorf("--policy %s requires a log signature (it has `log` lines): give every node the cluster's log key with --log-key, or drop the log lines", cc.PolicyFile)
		}
	}
	if cc.KeyFile != "" {
		k, err := checkpoint.LoadCosigner(cc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--cosign-key: %v", err)
		}
		if _, err := c.policy.Verifiers().Verifier(k.Name(), k.KeyHash()); err != nil {
			return nil, fmt.Errorf("--cosign-key %s: key %s is not a witness of --policy %s: add `witness <name> %s` to the policy of every node", cc.KeyFile, k.Name(), cc.PolicyFile, k.VerifierKey())
		}
		c.key = k
	} else {
		c.log.Warn("no --cosign-key: this node cosigns no checkpoint, and makes none while it leads")
	}
	if cc.LogKeyFile != "" {
		b, err := os.ReadFile(cc.LogKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--log-key: %v", err)
		}
		s, err := checkpoint.NewLogSigner(string(b))
		if err != nil {
			return nil, fmt.Errorf("--log-key %s: %v", cc.LogKeyFile, err)
		}
		if logKeys {
			if _, err := c.policy.Verifiers().Verifier(s.Name(), s.KeyHash()); err != nil {
				return nil, fmt.Errorf("--log-key %s: key %s is not a log key of --policy %s", cc.LogKeyFile, s.Name(), cc.PolicyFile)
			}
		}
		c.logSigner = s
	}
	ext, err := cc.ExternalWitnesses()
	if err != nil {
		return nil, err
	}
	for _, w := range ext {
		vkey := w.VerifierKey
		if w.KeyFile != "" {
			b, err := os.ReadFile(w.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("--external-witness-key %s: %v", w.Name, err)
			}
			vkey = strings.TrimSpace(string(b))
		}
		v, err := checkpoint.NewCosignatureVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("--external-witness %s: its verifier key: %v (want a cosignature/v1 key as `witnz witness keygen` writes)", w.Name, err)
		}
		if c.policy != nil {
			if _, err := c.policy.Verifiers().Verifier(v.Name(), v.KeyHash()); err != nil {
				c.log.Warn("the policy does not name this external witness's key: its cosignature is added to checkpoints but counts for no quorum", "external_witness", w.Name, "key", v.Name(), "policy", cc.PolicyFile)
			}
		}
		c.external = append(c.external, cosign.ExternalWitness{Name: w.Name, URL: w.URL, Verifier: v})
	}
	if len(cc.WitnessLogFiles) > 0 {
		logs, err := cosign.LoadWitnessLogs(cc.WitnessLogFiles)
		if err != nil {
			return nil, err
		}
		own := "witnz/" + cc.Cluster + "/"
		for _, l := range logs {
			if strings.HasPrefix(l.Origin, own) {
				return nil, fmt.Errorf("--witness-log: origin %s is a table of this cluster (%s), whose checkpoints the nodes cosign from their own state: remove it", l.Origin, cc.Cluster)
			}
		}
		c.witnessLogs = logs
	}
	return c, nil
}

// policyHasLogKeys reports whether a policy file has `log` lines, which
// make a log signature mandatory.
func policyHasLogKeys(text []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if f := strings.Fields(line); len(f) > 0 && f[0] == "log" {
			return true
		}
	}
	return false
}

// fsmOptions make Apply check stored checkpoints with this node's cluster
// name and policy.
func (c *cosigning) fsmOptions() []fsm.Option {
	var p fsm.CheckpointPolicy
	if c.policy != nil {
		p = c.policy
	}
	return []fsm.Option{fsm.WithCheckpoints(c.cfg.Cluster, p)}
}

// verifierKey is what GetStatus reports as cosigner_key.
func (c *cosigning) verifierKey() string {
	if c.key == nil {
		return ""
	}
	return c.key.VerifierKey()
}

// start opens the cosigning record and mounts the handlers.
func (c *cosigning) start(n *node.Node, tlsCfg *mtls.Config, srv *rpcserver.Server) error {
	if c.key != nil {
		st, err := cosign.OpenStore(filepath.Join(c.dataDir, cosign.StoreFile))
		if err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		c.store = st
	}
	httpClient := tlsCfg.HTTPClient()
	if c.cfg.AlertURL != "" {
		c.alerts = cosign.NewAlerter(alertv1connect.NewAlertServiceClient(httpClient, c.cfg.AlertURL, rpcserver.ClientOptions()...), c.log)
	}
	replica := cosign.FSMReplica(n.FSM())
	if testHookReplica != nil {
		replica = testHookReplica(c.nodeID, replica)
	}
	var history cosign.HistoryVerifier
	if c.policy != nil {
		history = c.policy
	}
	c.signer = cosign.NewSigner(cosign.SignerConfig{
		NodeID: c.nodeID, Cluster: c.cfg.Cluster, Key: c.key, PolicyDigest: c.policyDigest, Policy: history,
		Replica: replica, Store: c.store, Alerts: c.alerts, Log: c.log,
	})
	path, h := witnessv1connect.NewCosignServiceHandler(c.signer, srv.HandlerOptions()...)
	srv.Handle(path, h, witnessv1connect.CosignServiceName)
	if c.key != nil && c.policy != nil {
		var mu sync.Mutex
		clients := map[string]witnessv1connect.CosignServiceClient{}
		c.coord = cosign.NewCoordinator(cosign.CoordinatorConfig{
			NodeID: c.nodeID, Cluster: c.cfg.Cluster, Interval: c.cfg.Interval,
			Policy: c.policy, PolicyDigest: c.policyDigest, LogSigner: c.logSigner,
			Node: n, FSM: n.FSM(), Alerts: c.alerts, Log: c.log,
			External: c.external, HTTP: httpClient,
			Client: func(m node.Member) cosign.CosignClient {
				if m.APIAddr == "" {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				cl, ok := clients[m.APIAddr]
				if !ok {
					cl = witnessv1connect.NewCosignServiceClient(httpClient, m.APIAddr, rpcserver.ClientOptions()...)
					clients[m.APIAddr] = cl
				}
				return cl
			},
		})
	}
	if len(c.witnessLogs) > 0 {
		srv.Handle(cosign.AddCheckpointPath, cosign.NewTLogWitness(c.witnessLogs, c.key, c.store, c.log))
	}
	return nil
}

// run delivers alerts and, while this node leads, makes checkpoints, until
// ctx ends.
func (c *cosigning) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.alerts.Run(ctx) })
	if c.coord != nil {
		wg.Go(func() { c.coord.Run(ctx) })
	}
	wg.Wait()
}

// close closes the cosigning record.
func (c *cosigning) close() error {
	if c.store == nil {
		return nil
	}
	if err := c.store.Close(); err != nil {
		return fmt.Errorf("close the cosigning record: %w", err)
	}
	return nil
}
