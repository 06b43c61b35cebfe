// Package app wires the gateway together: it loads its certificate, checks
// Redis, builds the clients of the backend services, mounts GatewayService
// on an rpcserver and runs until its context ends.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/redisconn"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/gateway/internal/api"
	"github.com/witnz/witnz/services/gateway/internal/config"
	"github.com/witnz/witnz/services/gateway/internal/livefeed"
)

// Options tune parts of the gateway tests need to speed up; zero fields
// take the defaults.
type Options struct {
	API  api.Options
	Feed livefeed.Options
}

// App is a started (listening) gateway.
type App struct {
	log  *slog.Logger
	srv  *rpcserver.Server
	rdb  *redis.Client
	feed *livefeed.Feed
	hc   *http.Client
}

// New checks the configuration and Redis and binds the listeners. Its
// errors are single lines that say what to fix. The backend services need
// not be up yet: GetStatus reports the ones that are not, and readiness
// waits for the alert service.
func New(ctx context.Context, cfg config.Config, log *slog.Logger, opts Options) (a *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return nil, err
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
		Name:      "gateway",
		Addr:      cfg.Listen,
		AdminAddr: cfg.AdminListen,
		TLS:       tlsCfg.Server(),
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	feedOpts := opts.Feed
	feedOpts.Registerer = srv.Registry()
	feed := livefeed.New(rdb, cfg.RedisChannel, log, feedOpts)

	httpClient := tlsCfg.HTTPClient()
	gw := api.New(api.Backends{
		HTTPClient:    httpClient,
		ClientOptions: rpcserver.ClientOptions(),
		Witnesses:     cfg.Witnesses,
		Ingest:        cfg.Ingest,
		Alert:         cfg.Alert,
		Verifier:      cfg.Verifier,
	}, feed, srv.Stopping(), log, opts.API)
	path, h := gatewayv1connect.NewGatewayServiceHandler(gw, srv.HandlerOptions()...)
	srv.Handle(path, api.WithResponseController(h), gatewayv1connect.GatewayServiceName)

	srv.AddReadinessCheck("redis", func(ctx context.Context) error {
		if err := rdb.Ping(ctx).Err(); err != nil {
			return err
		}
		if !feed.Subscribed() {
			return fmt.Errorf("not subscribed to channel %s yet", cfg.RedisChannel)
		}
		return nil
	})
	alertHealth := strings.TrimSuffix(cfg.Alert, "/") + "/healthz"
	srv.AddReadinessCheck("alert", func(ctx context.Context) error {
		return checkHealth(ctx, httpClient, alertHealth)
	})

	log.Info("gateway ready", "identity", tlsCfg.Identity.String(), "witnesses", len(cfg.Witnesses),
		"alert", cfg.Alert, "ingest", cfg.Ingest, "redis", cfg.RedisAddr, "channel", cfg.RedisChannel)
	return &App{log: log, srv: srv, rdb: rdb, feed: feed, hc: httpClient}, nil
}

// checkHealth GETs a service's /healthz over mutual TLS.
func checkHealth(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}

// Addr is the bound address of the Connect/gRPC listener.
func (a *App) Addr() net.Addr { return a.srv.Addr() }

// AdminAddr is the bound address of the admin listener, or nil.
func (a *App) AdminAddr() net.Addr { return a.srv.AdminAddr() }

// Feed is the live alert feed, for tests and metrics.
func (a *App) Feed() *livefeed.Feed { return a.feed }

// Run serves until ctx ends, then ends the live streams, drains requests
// and closes the connections to Redis and the backends.
func (a *App) Run(ctx context.Context) error {
	feedCtx, stopFeed := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { a.feed.Run(feedCtx) })

	err := a.srv.Run(ctx)

	stopFeed()
	wg.Wait()
	a.hc.CloseIdleConnections()
	a.rdb.Close()
	return err
}
