// Package app wires the verifier together: it loads the commitment key,
// connects to PostgreSQL, builds mutual-TLS clients for the witness nodes,
// opens the run history, serves the Verifier API with health and readiness
// checks, and runs the scheduled verifications.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/witnessset"
	"github.com/witnz/witnz/services/verifier/internal/alerts"
	"github.com/witnz/witnz/services/verifier/internal/anchorcheck"
	"github.com/witnz/witnz/services/verifier/internal/config"
	"github.com/witnz/witnz/services/verifier/internal/history"
	"github.com/witnz/witnz/services/verifier/internal/verify"
)

// pgConnectTimeout bounds the first connection to PostgreSQL at start-up.
const pgConnectTimeout = 10 * time.Second

// Service is a verifier ready to serve.
type Service struct {
	log       *slog.Logger
	srv       *rpcserver.Server
	pool      *pgxpool.Pool
	witnesses *witnessset.Set
	history   *history.Store
	runner    *runner
	schedule  []config.Scheduled
	// alerter is nil without --alert.
	alerter *alerts.Alerter
	// anchorCheck is nil without --anchor.
	anchorCheck *anchorcheck.Checker
}

// New checks cfg against the world (key, certificates, PostgreSQL) and
// binds the listeners. Every error is one line that names what is wrong and
// how to fix it.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := commitment.LoadKey(cfg.KeyFile, cfg.KeyHex)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
	}
	var policy *checkpoint.Policy
	if cfg.PolicyFile != "" {
		if policy, err = checkpoint.LoadPolicy(cfg.PolicyFile); err != nil {
			return nil, fmt.Errorf("--policy %s: %w; give the checkpoint policy file the witnesses use", cfg.PolicyFile, err)
		}
	}
	// The evidence directory is created with the first bundle; findings
	// name their bundle by absolute path.
	if cfg.EvidenceDir, err = filepath.Abs(cfg.EvidenceDirOrDefault()); err != nil {
		return nil, fmt.Errorf("--evidence-dir: %w", err)
	}
	if fi, err := os.Stat(cfg.EvidenceDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("--evidence-dir %s is not a directory: name a directory for the evidence bundles", cfg.EvidenceDir)
	}
	hist := history.Memory()
	if cfg.DataDir != "" {
		if hist, err = history.Open(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	pool, err := connectPostgres(ctx, cfg.PGDSN)
	if err != nil {
		hist.Close()
		return nil, err
	}
	srv, err := rpcserver.New(rpcserver.Config{
		Name:      "verifier",
		Addr:      cfg.Listen,
		AdminAddr: cfg.AdminListen,
		TLS:       tlsCfg.Server(),
		Logger:    log,
	})
	if err != nil {
		pool.Close()
		hist.Close()
		return nil, err
	}
	var alerter *alerts.Alerter
	if cfg.AlertURL != "" {
		alerter = alerts.New(alertv1connect.NewAlertServiceClient(tlsCfg.HTTPClient(), cfg.AlertURL, rpcserver.ClientOptions()...), log)
	}
	v := verify.New(pool, tlsCfg.HTTPClient(), cfg.Witnesses, verify.Options{
		Policy:         policy,
		Checkpoints:    checkpointStore{hist},
		Key:            key,
		Slot:           cfg.Slot,
		EvidenceDir:    cfg.EvidenceDir,
		CatchUpTimeout: cfg.CatchUpTimeout,
		CheckpointWait: cfg.CheckpointWait,
		MaxFindings:    cfg.MaxFindings,
		Workers:        cfg.ScanWorkers,
		Log:            log,
	})
	s := &Service{
		log:       log,
		srv:       srv,
		pool:      pool,
		witnesses: witnessset.New(tlsCfg, cfg.Witnesses),
		history:   hist,
		runner:    newRunner(v, hist, alerter, log),
		alerter:   alerter,
		schedule:  cfg.Schedule,
	}
	if cfg.AnchorURL != "" {
		s.anchorCheck = anchorcheck.New(anchorcheck.Config{
			Client:   anchorv1connect.NewAnchorServiceClient(tlsCfg.HTTPClient(), cfg.AnchorURL, rpcserver.ClientOptions()...),
			URL:      cfg.AnchorURL,
			Interval: cfg.AnchorCheckInterval,
			Alerts:   alerter,
			Log:      log,
		})
	}
	path, h := verifierv1connect.NewVerifierServiceHandler(&handler{runner: s.runner, history: hist}, srv.HandlerOptions()...)
	srv.Handle(path, h, verifierv1connect.VerifierServiceName)
	srv.AddReadinessCheck("postgres", func(ctx context.Context) error { return pool.Ping(ctx) })
	srv.AddReadinessCheck("witness", s.witnesses.AnyAnswers)
	if !hist.Persistent() {
		log.Warn("the run history is kept in memory only: set --data-dir to keep it across restarts")
	}
	sched := make([]string, 0, len(cfg.Schedule))
	for _, sc := range cfg.Schedule {
		sched = append(sched, sc.Table+"="+sc.Interval.String())
	}
	if policy == nil {
		log.Warn("no checkpoint policy: the witnesses' cosigned checkpoints are not checked; set --policy to the witnesses' policy file")
	}
	if alerter == nil {
		log.Warn("no alert service: findings and log integrity problems are only logged and kept in the history; set --alert")
	}
	log.Info("verifier configured", "identity", tlsCfg.Identity.String(), "witnesses", cfg.Witnesses,
		"evidence_dir", cfg.EvidenceDir, "data_dir", cfg.DataDir, "schedule", sched, "policy", cfg.PolicyFile, "alert", cfg.AlertURL)
	return s, nil
}

// Addr is the bound address of the Verifier API.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (s *Service) AdminAddr() net.Addr { return s.srv.AdminAddr() }

// Run serves and runs the scheduled verifications until ctx ends, then
// drains, and closes the PostgreSQL pool and the history.
func (s *Service) Run(ctx context.Context) error {
	defer s.history.Close()
	defer s.pool.Close()
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.runner.schedule(sctx, s.schedule) })
	wg.Go(func() { s.alerter.Run(sctx) })
	if s.anchorCheck != nil {
		wg.Go(func() { s.anchorCheck.Run(sctx) })
	}
	err := s.srv.Run(ctx)
	cancel()
	wg.Wait()
	return err
}

func connectPostgres(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	pc.MaxConns = 4
	// Keys of findings are rendered as text: make the rendering of dates,
	// times and bytes independent of the server's defaults. Binary values,
	// which the commitments cover, do not depend on these settings.
	for k, v := range map[string]string{
		"application_name": "witnz-verifier",
		"TimeZone":         "UTC",
		"DateStyle":        "ISO, YMD",
		"IntervalStyle":    "postgres",
		"bytea_output":     "hex",
	} {
		if _, set := pc.ConnConfig.RuntimeParams[k]; !set {
			pc.ConnConfig.RuntimeParams[k] = v
		}
	}
	addr := net.JoinHostPort(pc.ConnConfig.Host, strconv.Itoa(int(pc.ConnConfig.Port)))
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, pgConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s (--pg-dsn): %s; start PostgreSQL there or correct --pg-dsn", addr, oneLine(err))
	}
	return pool, nil
}

// oneLine keeps an error message on a single line: some drivers put the
// server's detail on a second one.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// checkpointStore keeps the last checkpoint accepted per table in the run
// history's store.
type checkpointStore struct{ h *history.Store }

func (c checkpointStore) LastCheckpoint(table string) (verify.SeenCheckpoint, bool, error) {
	cp, ok, err := c.h.LastCheckpoint(table)
	return verify.SeenCheckpoint{Size: cp.Size, Root: cp.Root, Note: cp.Note}, ok, err
}

func (c checkpointStore) SaveCheckpoint(table string, cp verify.SeenCheckpoint) error {
	return c.h.SaveCheckpoint(table, history.Checkpoint{Size: cp.Size, Root: cp.Root, Note: cp.Note})
}
