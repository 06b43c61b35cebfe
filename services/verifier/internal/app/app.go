// Package app wires the verifier together: it loads the commitment key,
// connects to PostgreSQL, builds mutual-TLS clients for the witness nodes and
// serves the Verifier API with health and readiness checks.
//
// Verification itself (snapshot scans, bucket digests, findings with
// evidence) is not built yet: Verify and ListRuns answer Unimplemented.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/witnessset"
	"github.com/witnz/witnz/services/verifier/internal/config"
)

// pgConnectTimeout bounds the first connection to PostgreSQL at start-up.
const pgConnectTimeout = 10 * time.Second

// Service is a verifier ready to serve.
type Service struct {
	log       *slog.Logger
	srv       *rpcserver.Server
	pool      *pgxpool.Pool
	witnesses *witnessset.Set
	// key is loaded at start-up so a deployment without the right key
	// fails at once, not at its first verification.
	key commitment.Key
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
	pool, err := connectPostgres(ctx, cfg.PGDSN)
	if err != nil {
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
		return nil, err
	}
	s := &Service{
		log:       log,
		srv:       srv,
		pool:      pool,
		witnesses: witnessset.New(tlsCfg, cfg.Witnesses),
		key:       key,
	}
	path, h := verifierv1connect.NewVerifierServiceHandler(&handler{}, srv.HandlerOptions()...)
	srv.Handle(path, h, verifierv1connect.VerifierServiceName)
	srv.AddReadinessCheck("postgres", func(ctx context.Context) error { return pool.Ping(ctx) })
	srv.AddReadinessCheck("witness", s.witnesses.AnyAnswers)
	log.Info("verifier configured", "identity", tlsCfg.Identity.String(), "witnesses", cfg.Witnesses)
	return s, nil
}

// Addr is the bound address of the Verifier API.
func (s *Service) Addr() net.Addr { return s.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (s *Service) AdminAddr() net.Addr { return s.srv.AdminAddr() }

// Run serves until ctx ends, drains, and closes the PostgreSQL pool.
func (s *Service) Run(ctx context.Context) error {
	defer s.pool.Close()
	return s.srv.Run(ctx)
}

func connectPostgres(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn: %w", err)
	}
	pc.MaxConns = 4
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
