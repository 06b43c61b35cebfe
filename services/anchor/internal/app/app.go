// Package app wires the anchor service together: it opens the sink, the
// receipt store and the checkpoint policy, builds mutual-TLS clients for
// the witness nodes and the alert service, serves the Anchor API with
// health and readiness checks, and anchors on a schedule.
package app

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/anchor/internal/alerts"
	"github.com/witnz/witnz/services/anchor/internal/anchor"
	"github.com/witnz/witnz/services/anchor/internal/config"
	"github.com/witnz/witnz/services/anchor/internal/sink"
	"github.com/witnz/witnz/services/anchor/internal/store"
	"github.com/witnz/witnz/services/anchor/internal/witnesses"
)

// Service is an anchor service ready to serve.
type Service struct {
	log      *slog.Logger
	srv      *rpcserver.Server
	store    *store.Store
	anchorer *anchor.Anchorer
	alerts   *alerts.Alerter
}

// Options are the test seams of New.
type Options struct {
	// S3 adjusts the S3 sink's configuration before it is opened.
	S3 func(*sink.S3Config)
	// RecordTimeout bounds the retries of the witness commit after a sink
	// write (anchor.Config.RecordTimeout); 0 keeps the default.
	RecordTimeout time.Duration
}

// New checks cfg against the world (certificates, policy, sink, data
// directory) and binds the listeners. Every error is one line that names
// what is wrong and how to fix it.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, opts ...Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
	}
	policyText, err := os.ReadFile(cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("--policy %s cannot be read: %w; give the checkpoint policy file the witness nodes use", cfg.PolicyFile, unwrapPath(err))
	}
	policy, err := checkpoint.ParsePolicy(policyText)
	if err != nil {
		return nil, fmt.Errorf("--policy %s: %w", cfg.PolicyFile, err)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	snk, err := openSink(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.DataDir)
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
		st.Close()
		return nil, err
	}
	wit := witnesses.New(tlsCfg, cfg.Witnesses)
	al := alerts.New(tlsCfg, cfg.AlertURL, log)
	a := anchor.New(anchor.Config{
		Log: log, Sink: snk, Store: st, Witnesses: wit, Policy: policy,
		PolicySHA256: sha256.Sum256(policyText), Alerts: al, Interval: cfg.Interval, RecordTimeout: o.RecordTimeout,
		Metrics: anchor.NewMetrics(srv.Registry()),
	})
	s := &Service{log: log, srv: srv, store: st, anchorer: a, alerts: al}
	path, h := anchorv1connect.NewAnchorServiceHandler(&handler{anchorer: a}, srv.HandlerOptions()...)
	srv.Handle(path, h, anchorv1connect.AnchorServiceName)
	srv.AddReadinessCheck("sink", snk.Check)
	srv.AddReadinessCheck("witness", wit.AnyAnswers)
	log.Info("anchor configured", "identity", tlsCfg.Identity.String(), "sink", cfg.Sink, "sink_dir", cfg.SinkDir,
		"s3_bucket", cfg.S3.Bucket, "witnesses", cfg.Witnesses, "interval", cfg.Interval.String(), "policy", policy.Describe())
	return s, nil
}

func openSink(ctx context.Context, cfg config.Config, o Options) (sink.Sink, error) {
	if cfg.Sink == config.SinkDir {
		return sink.OpenDir(cfg.SinkDir)
	}
	sc := sink.S3Config{
		Endpoint: cfg.S3.Endpoint, Bucket: cfg.S3.Bucket, Region: cfg.S3.Region, PathStyle: cfg.S3.PathStyle,
		Prefix: cfg.S3.Prefix, Retain: cfg.S3.Retain, AccessKeyID: cfg.S3.AccessKeyID, SecretAccessKey: cfg.S3.SecretAccessKey,
	}
	if o.S3 != nil {
		o.S3(&sc)
	}
	return sink.OpenS3(ctx, sc)
}

// Addr is the bound address of the Anchor API.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (s *Service) AdminAddr() net.Addr { return s.srv.AdminAddr() }

// Anchorer is the service's publisher and checker.
func (s *Service) Anchorer() *anchor.Anchorer { return s.anchorer }

// Run serves and anchors on schedule until ctx ends, then drains and
// closes the receipt store.
func (s *Service) Run(ctx context.Context) error {
	defer s.store.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.srv.Run(gctx) })
	g.Go(func() error { return s.anchorer.Run(gctx) })
	g.Go(func() error { return s.alerts.Run(gctx) })
	return g.Wait()
}

// unwrapPath drops the operation and path of a *os.PathError; the caller
// names the file.
func unwrapPath(err error) error {
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
