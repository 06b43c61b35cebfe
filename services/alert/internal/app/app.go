// Package app wires the alert service together: it checks its
// dependencies (TLS material, PostgreSQL, Redis), migrates the database,
// mounts the Connect handlers on an rpcserver and runs until its context
// ends.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/redisconn"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/alert/internal/api"
	"github.com/witnz/witnz/services/alert/internal/config"
	"github.com/witnz/witnz/services/alert/internal/livefeed"
	"github.com/witnz/witnz/services/alert/internal/store"
)

// App is a started (listening) alert service.
type App struct {
	log   *slog.Logger
	srv   *rpcserver.Server
	store *store.Store
	rdb   *redis.Client
	feed  *livefeed.Publisher
}

// New checks the configuration's dependencies, migrates the database and
// binds the listeners. Its errors are single lines that say what to fix.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (a *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
	}

	st, err := store.Open(ctx, cfg.PGDSN)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	applied, err := store.Migrate(ctx, st.Pool())
	if err != nil {
		return nil, fmt.Errorf("migrate the alert database: %w", err)
	}
	if len(applied) > 0 {
		log.Info("database migrated", "applied", applied)
	}

	rdb, err := redisconn.Dial(ctx, cfg.RedisAddr, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			rdb.Close()
		}
	}()

	srv, err := rpcserver.New(rpcserver.Config{
		Name:      "alert",
		Addr:      cfg.Listen,
		AdminAddr: cfg.AdminListen,
		TLS:       tlsCfg.Server(),
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	feed := livefeed.New(livefeed.RedisClient{Redis: rdb}, cfg.RedisChannel, log, livefeed.Options{Registerer: srv.Registry()})

	alerts := api.NewAlertService(st, feed, log)
	path, h := alertv1connect.NewAlertServiceHandler(alerts, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AlertServiceName)
	agents := api.NewAgentService(st, feed, log, srv.Stopping())
	path, h = alertv1connect.NewAgentServiceHandler(agents, srv.HandlerOptions()...)
	srv.Handle(path, h, alertv1connect.AgentServiceName)

	srv.AddReadinessCheck("postgresql", st.Ping)
	srv.AddReadinessCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })

	log.Info("alert service ready", "identity", tlsCfg.Identity.String(), "redis", cfg.RedisAddr, "channel", cfg.RedisChannel)
	return &App{log: log, srv: srv, store: st, rdb: rdb, feed: feed}, nil
}

// Addr is the bound address of the Connect/gRPC listener.
func (a *App) Addr() net.Addr { return a.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (a *App) AdminAddr() net.Addr { return a.srv.AdminAddr() }

// Run serves until ctx ends, then drains requests, stops the live-feed
// retries and closes the database and Redis connections.
func (a *App) Run(ctx context.Context) error {
	feedCtx, stopFeed := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { a.feed.Run(feedCtx) })

	err := a.srv.Run(ctx)

	// Handlers have drained: nothing publishes any more.
	stopFeed()
	wg.Wait()
	a.rdb.Close()
	a.store.Close()
	return err
}
