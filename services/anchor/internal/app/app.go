// Package app wires the anchor service together: it opens the sink, builds
// mutual-TLS clients for the witness nodes and serves the Anchor API with
// health and readiness checks.
//
// Anchoring itself (publishing cosigned checkpoints, receipts, later
// checks) is not built yet: every RPC answers Unimplemented.
package app

import (
	"context"
	"log/slog"
	"net"

	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/witnessset"
	"github.com/witnz/witnz/services/anchor/internal/config"
	"github.com/witnz/witnz/services/anchor/internal/sink"
)

// Service is an anchor service ready to serve.
type Service struct {
	log       *slog.Logger
	srv       *rpcserver.Server
	sink      *sink.Dir
	witnesses *witnessset.Set
}

// New checks cfg against the world (certificates, sink directory) and binds
// the listeners. Every error is one line that names what is wrong and how to
// fix it.
func New(cfg config.Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
	}
	dir, err := sink.OpenDir(cfg.SinkDir)
	if err != nil {
		return nil, err
	}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:      "anchor",
		Addr:      cfg.Listen,
		AdminAddr: cfg.AdminListen,
		TLS:       tlsCfg.Server(),
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	s := &Service{
		log:       log,
		srv:       srv,
		sink:      dir,
		witnesses: witnessset.New(tlsCfg, cfg.Witnesses),
	}
	path, h := anchorv1connect.NewAnchorServiceHandler(&handler{}, srv.HandlerOptions()...)
	srv.Handle(path, h, anchorv1connect.AnchorServiceName)
	srv.AddReadinessCheck("sink", func(context.Context) error { return dir.Check() })
	srv.AddReadinessCheck("witness", s.witnesses.AnyAnswers)
	log.Info("anchor configured", "identity", tlsCfg.Identity.String(), "sink", cfg.Sink, "sink_dir", dir.Path(), "witnesses", cfg.Witnesses)
	return s, nil
}

// Addr is the bound address of the Anchor API.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (s *Service) AdminAddr() net.Addr { return s.srv.AdminAddr() }

// Run serves until ctx ends, then drains.
func (s *Service) Run(ctx context.Context) error { return s.srv.Run(ctx) }
