// Package app wires a witness node together: certificates, the Raft node
// and its mutual-TLS transport, and the Connect API on rpcserver.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/witness/internal/api"
	"github.com/witnz/witnz/services/witness/internal/config"
	"github.com/witnz/witnz/services/witness/internal/cosign"
	"github.com/witnz/witnz/services/witness/internal/node"
)

// CloseTimeout bounds the shutdown of Raft after the API stopped.
const CloseTimeout = 15 * time.Second

// App is a witness node ready to serve.
type App struct {
	cfg  config.Config
	log  *slog.Logger
	node *node.Node
	srv  *rpcserver.Server
	// cosign makes and cosigns checkpoints (cosign.go).
	cosign *cosigning
}

// New checks the environment (certificates, listeners, data directory),
// starts Raft and prepares the API. Errors are one line naming the flag at
// fault and the fix.
func New(cfg config.Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
	}
	if want := mtls.Witness(cfg.NodeID); tlsCfg.Identity != want {
		return nil, fmt.Errorf("--tls-cert %s is issued to %s, but node %q needs a certificate for %s (issue one with `witnz pki init`)", cfg.TLS.Cert, tlsCfg.Identity, cfg.NodeID, want)
	}
	raftLn, err := net.Listen("tcp", cfg.RaftListen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (pick a free address with --raft-listen)", cfg.RaftListen, err)
	}
	cs, err := loadCosign(cfg, log)
	if err != nil {
		raftLn.Close()
		return nil, err
	}
	peers := make([]node.Peer, len(cfg.Peers))
	for i, p := range cfg.Peers {
		peers[i] = node.Peer{ID: p.ID, RaftAddr: p.RaftAddr, APIAddr: p.APIAddr}
	}
	n, err := node.Open(node.Config{
		ID:         cfg.NodeID,
		DataDir:    cfg.DataDir,
		Listener:   raftLn,
		Advertise:  cfg.RaftAdvertise,
		TLS:        tlsCfg,
		Peers:      peers,
		Bootstrap:  cfg.Bootstrap,
		Logger:     log,
		Tuning:     node.Tuning(cfg.Raft),
		FSMOptions: cs.fsmOptions(),
		Membership: node.MembershipConfig{MinVoters: cfg.Membership.MinVoters},
		Rotation:   rotationConfig(cfg.Membership),
	})
	if err != nil {
		raftLn.Close()
		return nil, err
	}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:      "witness",
		Addr:      cfg.Listen,
		AdminAddr: cfg.AdminListen,
		TLS:       tlsCfg.Server(),
		Logger:    log,
	})
	if err != nil {
		n.Close(context.Background())
		return nil, err
	}
	svc := api.New(n, cfg.IngestIdentity, srv.Stopping())
	svc.SetAnchorIdentity(cfg.AnchorIdentity)
	svc.SetCosignerKey(cs.verifierKey())
	if cs.alerts != nil {
		svc.SetRejectionHook(func(r *witnessv1.Rejection) { cs.alerts.Raise(cosign.RejectionAlert(cfg.Cosign.Cluster, r)) })
	}
	path, h := witnessv1connect.NewWitnessServiceHandler(svc, srv.HandlerOptions()...)
	srv.Handle(path, h, witnessv1connect.WitnessServiceName)
	mpath, mh := witnessv1connect.NewMembershipServiceHandler(api.NewMembership(n), srv.HandlerOptions()...)
	srv.Handle(mpath, mh, witnessv1connect.MembershipServiceName)
	srv.AddReadinessCheck("raft", func(context.Context) error { return n.Ready() })
	if err := cs.start(n, tlsCfg, srv); err != nil {
		srv.Close()
		n.Close(context.Background())
		return nil, err
	}
	return &App{cfg: cfg, log: log, node: n, srv: srv, cosign: cs}, nil
}

// Addr is the bound address of the API listener.
func (a *App) Addr() net.Addr { return a.srv.Addr() }

// Run serves until ctx ends, then stops serving, hands leadership over if
// it holds it, stops Raft and closes the store.
func (a *App) Run(ctx context.Context) error {
	a.log.Info("witness node starting", "node_id", a.cfg.NodeID, "api", a.cfg.APIAdvertise, "raft", a.cfg.RaftAdvertise, "peers", len(a.cfg.Peers))
	cosignCtx, stopCosign := context.WithCancel(ctx)
	cosignDone := make(chan struct{})
	go func() {
		defer close(cosignDone)
		a.cosign.run(cosignCtx)
	}()
	serveErr := a.srv.Run(ctx)
	stopCosign()
	<-cosignDone
	cctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	closeErr := a.node.Close(cctx)
	if closeErr != nil {
		closeErr = fmt.Errorf("stop raft: %w", closeErr)
	}
	return errors.Join(serveErr, closeErr, a.cosign.close())
}

// rotationConfig is the rotation pool and schedule of the flags.
func rotationConfig(m config.Membership) node.RotationConfig {
	rc := node.RotationConfig{ActiveCount: m.ActiveCount, Every: m.RotateEvery}
	for _, p := range m.Pool {
		rc.Pool = append(rc.Pool, node.Peer{ID: p.ID, RaftAddr: p.RaftAddr, APIAddr: p.APIAddr})
	}
	return rc
}
