package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/host-agent/internal/admin"
	"github.com/witnz/witnz/services/host-agent/internal/agent"
	"github.com/witnz/witnz/services/host-agent/internal/config"
)

// run starts the host agent and keeps it connected until ctx ends. It
// returns a one-line error for any problem with the configuration or the
// environment.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv)
	if errors.Is(err, config.ErrHelp) {
		_, err = io.WriteString(stderr, config.Usage())
		return err
	}
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := logging.New(stderr, "host-agent", cfg.Log)
	if err != nil {
		return err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return err
	}
	if want := (mtls.Identity{Kind: mtls.KindAgent, Name: cfg.Hostname}); tlsCfg.Identity != want {
		return fmt.Errorf("--tls-cert %s is for %s, but this host runs as %s: issue a certificate for agent/%s, or set --hostname to the name in the certificate",
			cfg.TLS.Cert, tlsCfg.Identity, want, cfg.Hostname)
	}
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	u, _ := url.Parse(cfg.Alert) // checked by Validate
	a := agent.New(agent.Options{
		Client:    agent.NewClient(tlsCfg, cfg.Alert),
		AlertAddr: u.Host,
		Host:      agent.Host{Hostname: cfg.Hostname, OS: agent.OSDescription(), Version: version},
		Logger:    log,
		Registry:  reg,
	})

	g, gctx := errgroup.WithContext(ctx)
	if cfg.AdminListen != "" {
		adm, err := admin.New(cfg.AdminListen, a.Ready, reg, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return adm.Run(gctx) })
	}
	log.Info("host agent starting", "hostname", cfg.Hostname, "alert", cfg.Alert, "data_dir", cfg.DataDir, "version", version)
	g.Go(func() error { return a.Run(gctx) })
	err = g.Wait()
	log.Info("stopped")
	return err
}

// prepareDataDir creates dir and proves this process can write in it, so a
// bad --data-dir fails at start-up.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--data-dir %s cannot be created: %w; choose a directory this user may create or write", dir, err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("--data-dir %s is not writable: %w; give this user write access or choose another directory", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}
