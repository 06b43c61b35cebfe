package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pgcopy"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/cdc-ingest/internal/app"
)

var (
	ingestID   = mtls.Service("cdc-ingest")
	alertID    = mtls.Service("alert")
	operatorID = mtls.Identity{Kind: mtls.KindOperator, Name: "admin"}
)

// mustPKI creates a CA and certificates for the identities the tests use.
func mustPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ids := []mtls.Identity{ingestID, alertID, operatorID, mtls.Witness("w1"), mtls.Witness("w2")}
	if err := pki.Init(dir, ids, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustTLS(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serve runs handler on a real mutual-TLS rpcserver until the test ends and
// returns its https URL.
func serve(t *testing.T, tlsCfg *mtls.Config, path string, h http.Handler) string {
	t.Helper()
	srv, err := rpcserver.New(rpcserver.Config{Name: "fake", Addr: "127.0.0.1:0", TLS: tlsCfg.Server(), ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle(path, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + srv.Addr().String()
}

type entryKey struct {
	lsn uint64
	idx uint32
}

// fakeWitness is a witness node's Connect API that keeps each table's log
// in memory and, like the real FSM, skips entries at or below the last
// (commit_lsn, tx_index) it applied.
type fakeWitness struct {
	witnessv1connect.UnimplementedWitnessServiceHandler

	// leader, when set, makes this node a follower naming that leader.
	leader string
	// unavailable refuses every Append without storing it.
	unavailable atomic.Bool
	// loseAcks stores the next N Appends but answers Unavailable.
	loseAcks atomic.Int32

	mu         sync.Mutex
	modes      map[string]witnessv1.TableMode
	logs       map[string][]*witnessv1.Entry
	last       map[string]entryKey
	refused    []*witnessv1.Entry
	duplicates int
	calls      int
}

func newFakeWitness() *fakeWitness {
	return &fakeWitness{modes: map[string]witnessv1.TableMode{}, logs: map[string][]*witnessv1.Entry{}, last: map[string]entryKey{}}
}

func (w *fakeWitness) start(t *testing.T, dir, node string) string {
	path, h := witnessv1connect.NewWitnessServiceHandler(w)
	return serve(t, mustTLS(t, dir, mtls.Witness(node)), path, h)
}

func (w *fakeWitness) authorize(ctx context.Context) error {
	if id, ok := mtls.PeerIdentity(ctx); !ok || id != ingestID {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("only %s may append", ingestID))
	}
	return nil
}

func (w *fakeWitness) follower() error {
	err := connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("not the leader; the leader is %s", w.leader))
	err.Meta().Set("witnz-leader", w.leader)
	return err
}

func (w *fakeWitness) RegisterTable(ctx context.Context, req *connect.Request[witnessv1.RegisterTableRequest]) (*connect.Response[witnessv1.RegisterTableResponse], error) {
	if err := w.authorize(ctx); err != nil {
		return nil, err
	}
	if w.leader != "" {
		return nil, w.follower()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, known := w.modes[req.Msg.Table]
	w.modes[req.Msg.Table] = req.Msg.Mode
	return connect.NewResponse(&witnessv1.RegisterTableResponse{
		Table:   &witnessv1.TableInfo{Name: req.Msg.Table, Mode: req.Msg.Mode, Size: uint64(len(w.logs[req.Msg.Table]))},
		Created: !known,
	}), nil
}

func (w *fakeWitness) GetStatus(ctx context.Context, _ *connect.Request[witnessv1.GetStatusRequest]) (*connect.Response[witnessv1.GetStatusResponse], error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	resp := &witnessv1.GetStatusResponse{NodeId: "fake", State: "Leader"}
	for name, mode := range w.modes {
		resp.Tables = append(resp.Tables, w.infoLocked(name, mode))
	}
	return connect.NewResponse(resp), nil
}

// infoLocked derives what the real state machine reports about a table's
// protection from its entries (services/witness/internal/fsm).
func (w *fakeWitness) infoLocked(name string, mode witnessv1.TableMode) *witnessv1.TableInfo {
	info := &witnessv1.TableInfo{Name: name, Mode: mode, Size: uint64(len(w.logs[name]))}
	var baseline uint64
	for seq, e := range w.logs[name] {
		info.LastCommitLsn, info.LastTxIndex = e.CommitLsn, e.TxIndex
		switch e.Op {
		case witnessv1.Op_OP_PROTECT:
			info.Protection, info.EpochSeq, info.BaselineLsn, baseline = witnessv1.Protection_PROTECTION_BASELINING, uint64(seq), e.CommitLsn, 0
		case witnessv1.Op_OP_BASELINE:
			baseline++
		case witnessv1.Op_OP_SCHEMA:
			if info.Protection == witnessv1.Protection_PROTECTION_BASELINING {
				info.Protection, info.BaselineRows = witnessv1.Protection_PROTECTION_PROTECTED, baseline
			}
			info.SchemaCommit = e.DataCommit
		case witnessv1.Op_OP_UNPROTECT:
			info.Protection = witnessv1.Protection_PROTECTION_UNPROTECTED
		}
	}
	return info
}

func (w *fakeWitness) GetEntries(ctx context.Context, req *connect.Request[witnessv1.GetEntriesRequest], stream *connect.ServerStream[witnessv1.GetEntriesResponse]) error {
	w.mu.Lock()
	log := w.logs[req.Msg.Table]
	end := req.Msg.End
	if end == 0 || end > uint64(len(log)) {
		end = uint64(len(log))
	}
	var out []*witnessv1.LoggedEntry
	for seq := req.Msg.Start; seq < end; seq++ {
		out = append(out, &witnessv1.LoggedEntry{Seq: seq, Entry: log[seq]})
	}
	w.mu.Unlock()
	return stream.Send(&witnessv1.GetEntriesResponse{Entries: out})
}

func (w *fakeWitness) Append(ctx context.Context, req *connect.Request[witnessv1.AppendRequest]) (*connect.Response[witnessv1.AppendResponse], error) {
	if err := w.authorize(ctx); err != nil {
		return nil, err
	}
	if w.leader != "" {
		return nil, w.follower()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	table := req.Msg.Table
	if _, ok := w.modes[table]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("table %s is not registered", table))
	}
	if w.unavailable.Load() {
		w.refused = append(w.refused, req.Msg.Entries...)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("no quorum"))
	}
	// The witness's pipelining rule: a batch is logged only once the batch
	// it follows is.
	if after := (entryKey{req.Msg.AfterCommitLsn, req.Msg.AfterTxIndex}); after != (entryKey{}) {
		last, ok := w.last[table]
		if !ok || after.lsn > last.lsn || after.lsn == last.lsn && after.idx > last.idx {
			return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("the batch follows %v but the log ends at %v", after, last))
		}
	}
	var dups uint32
	for _, e := range req.Msg.Entries {
		k := entryKey{e.CommitLsn, e.TxIndex}
		last, ok := w.last[table]
		if ok && (k.lsn < last.lsn || k.lsn == last.lsn && k.idx <= last.idx) {
			dups++
			continue
		}
		w.last[table] = k
		w.logs[table] = append(w.logs[table], e)
	}
	w.duplicates += int(dups)
	if w.loseAcks.Load() > 0 {
		w.loseAcks.Add(-1)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("answer lost"))
	}
	return connect.NewResponse(&witnessv1.AppendResponse{Table: table, Size: uint64(len(w.logs[table])), Duplicates: dups}), nil
}

// entries returns a table's logged changes: every entry but the PROTECT
// and SCHEMA entries that bracket its baseline.
func (w *fakeWitness) entries(table string) []*witnessv1.Entry {
	var out []*witnessv1.Entry
	for _, e := range w.allEntries(table) {
		if e.Op != witnessv1.Op_OP_PROTECT && e.Op != witnessv1.Op_OP_SCHEMA {
			out = append(out, e)
		}
	}
	return out
}

// allEntries returns every entry of a table's log.
func (w *fakeWitness) allEntries(table string) []*witnessv1.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*witnessv1.Entry(nil), w.logs[table]...)
}

func (w *fakeWitness) refusedEntries() []*witnessv1.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*witnessv1.Entry(nil), w.refused...)
}

// fakeAlerts is the alert service's Connect API, keeping alerts by id.
type fakeAlerts struct {
	alertv1connect.UnimplementedAlertServiceHandler
	mu     sync.Mutex
	alerts map[string]*alertv1.Alert
	order  []string
}

func (a *fakeAlerts) start(t *testing.T, dir string) string {
	a.alerts = map[string]*alertv1.Alert{}
	path, h := alertv1connect.NewAlertServiceHandler(a)
	return serve(t, mustTLS(t, dir, alertID), path, h)
}

func (a *fakeAlerts) IngestAlerts(ctx context.Context, req *connect.Request[alertv1.IngestAlertsRequest]) (*connect.Response[alertv1.IngestAlertsResponse], error) {
	if id, ok := mtls.PeerIdentity(ctx); !ok || id.Kind != mtls.KindService {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("service identities only"))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &alertv1.IngestAlertsResponse{}
	for _, al := range req.Msg.Alerts {
		if _, ok := a.alerts[al.AlertId]; ok {
			resp.Duplicates++
			continue
		}
		a.alerts[al.AlertId] = al
		a.order = append(a.order, al.AlertId)
		resp.Stored++
	}
	return connect.NewResponse(resp), nil
}

func (a *fakeAlerts) list() []*alertv1.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*alertv1.Alert, len(a.order))
	for i, id := range a.order {
		out[i] = a.alerts[id]
	}
	return out
}

// syncBuffer collects the service's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one test's world: PostgreSQL, certificates, a fake witness and a
// fake alert service.
type env struct {
	pg       *testenv.PG
	db       string
	pki      string
	key      commitment.Key
	keyHex   string
	witness  *fakeWitness
	wURL     string
	alerts   *fakeAlerts
	alertURL string
}

func newEnv(t *testing.T, pg *testenv.PG, db string) *env {
	t.Helper()
	var k commitment.Key
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	e := &env{pg: pg, db: db, pki: mustPKI(t), key: k, keyHex: hex.EncodeToString(k[:]), witness: newFakeWitness(), alerts: &fakeAlerts{}}
	pg.CreateDatabase(t, db)
	e.wURL = e.witness.start(t, e.pki, "w1")
	e.alertURL = e.alerts.start(t, e.pki)
	return e
}

// args are the flags of a cdc-ingest run against this env.
func (e *env) args(listen string, protect ...string) []string {
	p := pki.PathsFor(e.pki, ingestID)
	args := []string{
		"--listen", listen,
		"--tls-cert", p.Cert, "--tls-key", p.Key, "--tls-ca", p.CA,
		"--pg-dsn", e.pg.DSN(e.db),
		"--witness", e.wURL,
		"--alert", e.alertURL,
		"--log-format", "text", "--log-level", "debug",
	}
	for _, t := range protect {
		args = append(args, "--protect", t)
	}
	return args
}

func (e *env) getenv(name string) string {
	if name == "WITNZ_COMMIT_KEY" {
		return e.keyHex
	}
	return ""
}

// running is a cdc-ingest started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
	log    *syncBuffer
	status ingestv1connect.IngestServiceClient
}

// start runs cdc-ingest with args until the test ends (or stop) and waits
// until it streams.
func (e *env) start(t *testing.T, args []string) *running {
	t.Helper()
	listen := ""
	for i, a := range args {
		if a == "--listen" {
			listen = args[i+1]
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), log: &syncBuffer{}}
	go func() { r.done <- app.Run(ctx, args, e.getenv, r.log) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("cdc-ingest log:\n%s", r.log.String())
		}
	})
	r.status = ingestv1connect.NewIngestServiceClient(mustTLS(t, e.pki, operatorID).HTTPClient(), "https://"+listen, rpcserver.ClientOptions()...)
	waitFor(t, 30*time.Second, "cdc-ingest streaming", func() bool {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("cdc-ingest exited: %v\n%s", err, r.log.String())
		default:
		}
		resp, err := r.status.GetStatus(t.Context(), connect.NewRequest(&ingestv1.GetStatusRequest{}))
		return err == nil && resp.Msg.Streaming
	})
	return r
}

// stop shuts cdc-ingest down gracefully and returns Run's result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("cdc-ingest did not stop within 30s\n%s", r.log.String())
		return nil
	}
}

func (r *running) getStatus(t *testing.T) *ingestv1.GetStatusResponse {
	t.Helper()
	resp, err := r.status.GetStatus(t.Context(), connect.NewRequest(&ingestv1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// slotLSN reads the slot's confirmed_flush_lsn as a number.
func slotLSN(t *testing.T, conn *pgx.Conn, slot string) uint64 {
	t.Helper()
	var lsn uint64
	err := conn.QueryRow(t.Context(), `SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// copyRows runs query, a SELECT, as a binary COPY and returns each row's
// encoding (pgcopy hands out tuples, which are exactly the row encoding of
// commitment.AppendRow).
func copyRows(t *testing.T, conn *pgx.Conn, query string) [][]byte {
	t.Helper()
	var rows [][]byte
	_, err := pgcopy.Scan(t.Context(), conn.PgConn(), "COPY ("+query+") TO STDOUT (FORMAT binary)", func(row []byte) error {
		rows = append(rows, bytes.Clone(row))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}
