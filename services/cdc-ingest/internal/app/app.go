// Package app wires cdc-ingest together: configuration, start-up checks,
// the publication and slot, the witness and alert clients, the replication
// stream and the API server.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/api"
	"github.com/witnz/witnz/services/cdc-ingest/internal/capture"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pipeline"
	"github.com/witnz/witnz/services/cdc-ingest/internal/stream"
	"github.com/witnz/witnz/services/cdc-ingest/internal/witnessclient"
)

// Name is the service name in logs and metrics.
const Name = "cdc-ingest"

// Run runs cdc-ingest until ctx ends. Configuration and start-up problems
// come back as one-line errors naming the fix.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log, err := logging.New(stderr, Name, cfg.Log)
	if err != nil {
		return err
	}
	key, err := commitment.LoadKey(cfg.KeyFile, cfg.KeyHex)
	if err != nil {
		return err
	}
	tlsCfg, err := mtls.Load(cfg.TLS)
	if err != nil {
		return err
	}
	db, err := pgsource.Open(ctx, cfg.PGDSN)
	if err != nil {
		return err
	}
	defer db.Close()
	tables, err := prepare(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: Name, Addr: cfg.Listen, AdminAddr: cfg.AdminListen, TLS: tlsCfg.Server(), Logger: log})
	if err != nil {
		return err
	}

	httpc := tlsCfg.HTTPClient()
	defer httpc.CloseIdleConnections()
	witness := witnessclient.New(cfg.Witness, httpc, log, rpcserver.ClientOptions()...)
	sender := alerts.NewSender(alertv1connect.NewAlertServiceClient(httpc, cfg.Alert, rpcserver.ClientOptions()...), log)
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.String()
	}
	pipe := pipeline.New(pipeline.Options{
		Tables:    names,
		BatchMax:  cfg.BatchMax,
		BatchWait: cfg.BatchWait,
		Appender:  witness,
		Alerts:    sender,
	})
	dec := capture.New(capture.Options{
		Slot:       cfg.Slot,
		Key:        key,
		Tables:     tables,
		KeyColumns: db.KeyColumns,
		Sink:       pipe,
		Log:        log,
	})
	st := stream.New(stream.Options{
		DSN:         cfg.PGDSN,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Tables:      cfg.Protect,
		DB:          db,
		Decoder:     dec,
		Pipeline:    pipe,
		Log:         log,
	})

	path, h := ingestv1connect.NewIngestServiceHandler(&api.Service{Source: st}, srv.HandlerOptions()...)
	srv.Handle(path, h, ingestv1connect.IngestServiceName)
	srv.AddReadinessCheck("replication", func(context.Context) error {
		if !st.Streaming() {
			return errors.New("replication stream not connected")
		}
		return nil
	})
	srv.AddReadinessCheck("witness", witness.Ping)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error {
		if err := register(gctx, witness, cfg.Protect, log); err != nil {
			stopped, cancel := context.WithCancel(context.Background())
			cancel()
			pipe.Close(stopped) // the stream never ran: nothing to flush
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		return st.Run(gctx)
	})
	return g.Wait()
}

// register starts or confirms the log of every protected table on the
// witness cluster, waiting for the cluster if it is not up yet.
func register(ctx context.Context, witness *witnessclient.Client, tables []config.Table, log *slog.Logger) error {
	for _, t := range tables {
		resp, err := witness.RegisterTable(ctx, t.String(), t.Mode)
		if err != nil {
			return err
		}
		log.Info("table registered with the witness cluster", "table", t.String(), "mode", t.ModeName(), "created", resp.GetCreated(), "log_size", resp.GetTable().GetSize())
	}
	return nil
}

// prepare runs the start-up checks and makes sure the publication and the
// slot exist.
func prepare(ctx context.Context, cfg config.Config, db *pgsource.DB, log *slog.Logger) ([]pgsource.Table, error) {
	tables, err := db.Preflight(ctx, cfg.Protect)
	if err != nil {
		return nil, err
	}
	created, added, err := db.EnsurePublication(ctx, cfg.Publication, tables)
	if err != nil {
		return nil, err
	}
	switch {
	case created:
		log.Info("publication created", "publication", cfg.Publication, "tables", len(tables))
	case len(added) > 0:
		log.Info("tables added to the publication", "publication", cfg.Publication, "tables", added)
	}
	repl, err := pgsource.ConnectReplication(ctx, cfg.PGDSN)
	if err != nil {
		return nil, err
	}
	defer repl.Close(context.Background())
	slot, slotCreated, err := db.EnsureSlot(ctx, repl, cfg.Slot)
	if err != nil {
		return nil, err
	}
	if slotCreated {
		log.Info("replication slot created", "slot", cfg.Slot, "plugin", "pgoutput", "confirmed_flush_lsn", slot.ConfirmedFlushLSN.String())
	}
	for _, t := range tables {
		log.Info("protecting table", "table", t.String(), "mode", t.ModeName(), "key", keyDesc(t))
	}
	return tables, nil
}

func keyDesc(t pgsource.Table) string {
	if len(t.KeyColumns) == 0 {
		return "whole row (no primary key)"
	}
	return fmt.Sprint(t.KeyColumns)
}
