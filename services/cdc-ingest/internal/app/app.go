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
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pgsetup"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/cdc-ingest/internal/alerts"
	"github.com/witnz/witnz/services/cdc-ingest/internal/api"
	"github.com/witnz/witnz/services/cdc-ingest/internal/capture"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/control"
	"github.com/witnz/witnz/services/cdc-ingest/internal/monitor"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pipeline"
	"github.com/witnz/witnz/services/cdc-ingest/internal/protect"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
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
	if err := db.Preflight(ctx, cfg.Slot); err != nil {
		return err
	}
	if created, err := db.EnsurePublication(ctx, cfg.Publication); err != nil {
		return err
	} else if created {
		log.Info("publication created", "publication", cfg.Publication)
	}
	reg := prometheus.NewRegistry()
	srv, err := rpcserver.New(rpcserver.Config{Name: Name, Addr: cfg.Listen, AdminAddr: cfg.AdminListen, TLS: tlsCfg.Server(), Logger: log, Registry: reg})
	if err != nil {
		return err
	}

	httpc := tlsCfg.HTTPClient()
	defer httpc.CloseIdleConnections()
	witness := witnessclient.New(cfg.Witness, httpc, log, rpcserver.ClientOptions()...)
	var pipe *pipeline.Pipeline
	var st *stream.Stream
	var mgr *protect.Manager
	var mon *monitor.Monitor
	m := newMetrics(reg, gauges{
		confirmedLSN: func() float64 { return float64(st.Confirmed()) },
		lagBytes:     func() float64 { return float64(mon.Status().LagBytes) },
		heartbeatAge: func() float64 { return heartbeatAge(mon.Status().LastHeartbeat) },
		pending:      func() float64 { return float64(pipe.Pending()) },
		streaming: func() float64 {
			if st.Streaming() {
				return 1
			}
			return 0
		},
	})
	sender := countingSender{alerts.NewSender(alertv1connect.NewAlertServiceClient(httpc, cfg.Alert, rpcserver.ClientOptions()...), log), m}
	pipe = pipeline.New(pipeline.Options{
		BatchMax:    cfg.BatchMax,
		BatchWait:   cfg.BatchWait,
		Inflight:    cfg.AppendInflight,
		Appender:    witness,
		Alerts:      sender,
		OnAppend:    m.onAppend,
		OnResend:    m.onResend,
		OnWitnessed: m.onWitnessed,
	})
	// Once this process streams the slot, control messages are written
	// only by it; one written later that it did not seal is a replay
	// (control.ReplayGuard). Until then another cdc-ingest may have held
	// the slot (and written heartbeats this one reads when it takes over).
	guard := control.NewReplayGuard()
	announced := capture.NewAnnouncements()
	dec := capture.New(capture.Options{
		Announced:   announced,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		Key:         key,
		KeyColumns:  db.KeyColumns,
		Sink:        pipe,
		Log:         log,
		ReplayGuard: guard,
		OnUnprotect: func(table string) { mgr.Untracked(table) },
		OnHeartbeat: func(sentAt time.Time, lsn pglogrepl.LSN) { mon.HeartbeatSeen(sentAt, lsn) },
	})
	st = stream.New(stream.Options{
		DSN:         cfg.PGDSN,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		DB:          db,
		Decoder:     dec,
		Pipeline:    pipe,
		Log:         log,
		Tables:      func() []*ingestv1.ProtectedTable { return tableStatus(mgr) },
		OnFirstStart: func(at pglogrepl.LSN) {
			guard.Since(uint64(at))
			log.Info("control messages written from here on must be sealed by this process", "since_lsn", at.String())
		},
	})
	mgr = protect.New(protect.Options{
		DB:          db,
		Witness:     witness,
		Stream:      st,
		Alerts:      sender,
		Key:         key,
		Guard:       guard,
		Slot:        cfg.Slot,
		Publication: cfg.Publication,
		BatchMax:    min(cfg.BatchMax, witnessMaxBatch),
		Schema:      schemaOf,
		Track: func(tr protect.Tracked) {
			pipe.AddTable(tr.String())
			dec.Protect(capture.Table{Table: tr.Table, Seam: tr.Seam, SchemaCommit: tr.SchemaCommit, ExpectedSchema: tr.ExpectedSchema})
		},
		Pause:  func(reason string) { mon.Pause(reason) },
		Resume: func() { mon.Resume() },
		Log:    log,
	})
	mon = monitor.New(monitor.Options{
		DB:                db.Pool,
		Key:               key,
		Guard:             guard,
		Slot:              cfg.Slot,
		Publication:       cfg.Publication,
		Interval:          cfg.CheckInterval,
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		MaxLagBytes:       cfg.MaxLagBytes,
		Tables:            dec.Tables,
		Streaming:         st.Streaming,
		Announced:         announced,
		Alerts:            sender,
		Log:               log,
	})

	path, h := ingestv1connect.NewIngestServiceHandler(&api.Service{Source: st, Controller: mgr}, srv.HandlerOptions()...)
	srv.Handle(path, h, ingestv1connect.IngestServiceName)
	srv.AddReadinessCheck("replication", func(context.Context) error {
		if !st.Streaming() && !st.Paused() {
			return errors.New("replication stream not connected")
		}
		return nil
	})
	srv.AddReadinessCheck("witness", witness.Ping)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error {
		if err := startup(gctx, cfg, db, witness, mgr, sender, log); err != nil {
			stopped, cancel := context.WithCancel(context.Background())
			cancel()
			pipe.Close(stopped) // the stream never ran: nothing to flush
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		g.Go(func() error { return mon.Run(gctx) })
		return st.Run(gctx)
	})
	return g.Wait()
}

// witnessMaxBatch is the witness's limit of entries per Append.
const witnessMaxBatch = 10000

// schemaOf reads a table's schema as the catalog in tx describes it.
func schemaOf(ctx context.Context, tx pgx.Tx, oid uint32) (*schema.Schema, error) {
	sc, err := schema.Load(ctx, tx, oid)
	if err != nil {
		return nil, err
	}
	return &sc, nil
}

// tableStatus is the status of the protected tables.
func tableStatus(mgr *protect.Manager) []*ingestv1.ProtectedTable {
	busy := mgr.Busy()
	var out []*ingestv1.ProtectedTable
	for _, t := range mgr.Tables() {
		state := "protected"
		if b, ok := busy[t.String()]; ok {
			state = b
		}
		out = append(out, &ingestv1.ProtectedTable{Name: t.String(), Mode: t.Mode, State: state, SeamLsn: t.Seam.String()})
		delete(busy, t.String())
	}
	for name, b := range busy {
		out = append(out, &ingestv1.ProtectedTable{Name: name, State: b})
	}
	return out
}

// startup creates or checks the slot and brings every protected table
// into the stream: tables the witness log says are protected resume from
// their seam; tables named by --protect that are not (yet) protected, and
// baselines a crash interrupted, get the protect flow.
func startup(ctx context.Context, cfg config.Config, db *pgsource.DB, witness *witnessclient.Client, mgr *protect.Manager, sender alertSender, log *slog.Logger) error {
	status, err := witness.Status(ctx)
	if err != nil {
		return err
	}
	known := map[string]*witnessv1.TableInfo{}
	for _, t := range status.GetTables() {
		known[t.GetName()] = t
	}
	want := map[string]config.Table{}
	var order []string
	for _, t := range cfg.Protect {
		want[t.String()] = t
		order = append(order, t.String())
	}
	for _, info := range status.GetTables() {
		switch info.GetProtection() {
		case witnessv1.Protection_PROTECTION_PROTECTED, witnessv1.Protection_PROTECTION_BASELINING:
		default:
			continue
		}
		if _, ok := want[info.GetName()]; ok {
			continue
		}
		t, err := config.ParseTable(info.GetName())
		if err != nil {
			return fmt.Errorf("witness log %q: %w", info.GetName(), err)
		}
		t.Mode = info.GetMode()
		want[t.String()] = t
		order = append(order, t.String())
	}

	slotLSN, created, err := ensureSlot(ctx, cfg, db, known)
	if err != nil {
		return err
	}
	if created {
		log.Info("replication slot created", "slot", cfg.Slot, "plugin", "pgoutput", "confirmed_flush_lsn", slotLSN.String())
	}

	inPub, err := db.PublicationTables(ctx, cfg.Publication)
	if err != nil {
		return err
	}
	for _, name := range order {
		t := want[name]
		info := known[name]
		if info != nil && info.GetMode() != t.Mode {
			return fmt.Errorf("--protect %s:%s, but its witness log is %s and a log's mode never changes: protect it %s", name, config.ModeName(t.Mode), config.ModeName(info.GetMode()), config.ModeName(info.GetMode()))
		}
		if info.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
			pt, err := db.CheckTable(ctx, t)
			if errors.Is(err, pgsource.ErrNoTable) {
				// Dropped while cdc-ingest was down: the other tables
				// are still protected.
				log.Error("protected table no longer exists", "table", name, "error", err)
				sendAlert(ctx, sender, log, alerts.TableDropped(alerts.Dropped{Where: alerts.Where{Slot: cfg.Slot, At: time.Now()}, Table: name}))
				continue
			}
			if err != nil {
				return err
			}
			if !inPub[name] {
				if err := db.AddToPublication(ctx, cfg.Publication, pt); err != nil {
					return err
				}
				sendAlert(ctx, sender, log, alerts.PublicationChanged(alerts.PublicationChange{
					Where: alerts.Where{Slot: cfg.Slot, At: time.Now()}, Publication: cfg.Publication,
					Change: alerts.PublicationTableRestored, Table: name, OID: pt.OID,
				}))
			}
			if err := mgr.Resume(ctx, t, info); err != nil {
				return err
			}
			log.Info("protecting table", "table", name, "mode", config.ModeName(t.Mode), "seam_lsn", pglogrepl.LSN(info.GetBaselineLsn()+1).String(), "log_size", info.GetSize())
			continue
		}
		if info.GetProtection() == witnessv1.Protection_PROTECTION_BASELINING {
			log.Warn("the baseline of this table was interrupted; taking a new one", "table", name)
		}
		if _, err := mgr.ProtectPaused(ctx, t, "cdc-ingest --protect"); err != nil {
			return err
		}
	}
	// A table unprotected after the slot's confirmed position is streamed
	// again up to its UNPROTECT (the witness drops the replays); track it
	// until then, or its replayed changes would look like a stranger's.
	for _, info := range status.GetTables() {
		if _, ok := want[info.GetName()]; ok || info.GetProtection() != witnessv1.Protection_PROTECTION_UNPROTECTED || info.GetLastCommitLsn() < uint64(slotLSN) {
			continue
		}
		t, err := config.ParseTable(info.GetName())
		if err != nil {
			continue
		}
		t.Mode = info.GetMode()
		if err := mgr.Resume(ctx, t, info); err != nil {
			log.Warn("table unprotected after the slot's confirmed position cannot be tracked until its UNPROTECT is read again", "table", t.String(), "error", err)
		}
	}
	return nil
}

// ensureSlot creates the slot when it is missing, unless tables are
// already protected: then someone dropped it, and changes made since
// cannot be read. The product never recreates it silently.
func ensureSlot(ctx context.Context, cfg config.Config, db *pgsource.DB, known map[string]*witnessv1.TableInfo) (pglogrepl.LSN, bool, error) {
	_, err := db.Slot(ctx, cfg.Slot)
	if errors.Is(err, pgsetup.ErrNoSlot) {
		for name, info := range known {
			if info.GetProtection() == witnessv1.Protection_PROTECTION_PROTECTED {
				return 0, false, fmt.Errorf("replication slot %s is missing although %s is protected: someone dropped it, and changes made since cannot be read; run `witnz init` to create it again, then `witnz protect` each table to take new baselines (and verify them first)", cfg.Slot, name)
			}
		}
	} else if err != nil {
		return 0, false, err
	}
	slot, created, err := db.EnsureSlot(ctx, cfg.Slot)
	return slot.ConfirmedFlushLSN, created, err
}

func sendAlert(ctx context.Context, sender alertSender, log *slog.Logger, a *alertv1.Alert) {
	if err := sender.Send(ctx, []*alertv1.Alert{a}); err != nil {
		log.Warn("alert not delivered", "type", a.GetType(), "error", err)
	}
}

// heartbeatAge is the age of the newest heartbeat in seconds, -1 before
// the first.
func heartbeatAge(last time.Time) float64 {
	if last.IsZero() {
		return -1
	}
	return time.Since(last).Seconds()
}
