package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/witnessclient"
)

// gate is a fake witness and alert service: each call waits for a release
// when gated, then records what it got.
type gate struct {
	release chan struct{} // nil: answer at once
	calls   atomic.Int32  // calls started
	mu      sync.Mutex
	batches [][]*witnessv1.Entry
	alerts  int
}

func (g *gate) wait(ctx context.Context) error {
	g.calls.Add(1)
	if g.release == nil {
		return nil
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) AppendAfter(ctx context.Context, _ string, _ witnessclient.Position, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.batches = append(g.batches, entries)
	return &witnessv1.AppendResponse{}, nil
}

func (g *gate) Send(ctx context.Context, alerts []*alertv1.Alert) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.alerts += len(alerts)
	return nil
}

func (g *gate) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for _, b := range g.batches {
		out = append(out, len(b))
	}
	return out
}

func newPipeline(t *testing.T, g *gate, batchMax int, batchWait time.Duration) *Pipeline {
	t.Helper()
	p := New(Options{Tables: []string{"public.t"}, BatchMax: batchMax, BatchWait: batchWait, Appender: g, Alerts: g})
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx)
	})
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitSafe(t *testing.T, p *Pipeline, want uint64) {
	t.Helper()
	waitFor(t, "safe LSN", func() bool { return p.SafeLSN() == want })
}

func entry(lsn uint64, idx uint32) *witnessv1.Entry {
	return &witnessv1.Entry{CommitLsn: lsn, TxIndex: idx, Op: witnessv1.Op_OP_INSERT}
}

func TestSafeLSNWaitsForAcknowledgements(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	p := newPipeline(t, g, 10, time.Hour)
	p.Connected(50)
	if got := p.SafeLSN(); got != 50 {
		t.Fatalf("safe = %d, want the slot's position 50", got)
	}

	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.CommitTx(110, time.Now())
	p.Observe(105) // a keepalive past the pending commit
	if got := p.SafeLSN(); got != 100 {
		t.Fatalf("safe = %d with the transaction at 100 pending, want 100", got)
	}
	waitFor(t, "first batch in flight", func() bool { return g.calls.Load() == 1 })
	p.BeginTx(200)
	p.Entry("public.t", entry(200, 0))
	p.CommitTx(210, time.Now())

	g.release <- struct{}{} // the first batch is acknowledged
	waitSafe(t, p, 110)
	p.Observe(300)
	if got := p.SafeLSN(); got != 200 {
		t.Fatalf("safe = %d with the transaction at 200 pending, want 200", got)
	}
	g.release <- struct{}{}
	waitSafe(t, p, 300)
	if got := p.Pending(); got != 0 {
		t.Errorf("pending = %d, want 0", got)
	}
	tables, _, last := p.Status()
	if tables[0].Committed != 2 || last.IsZero() {
		t.Errorf("status = %v, %v", tables, last)
	}
}

func TestAlertsHoldTheSlot(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	p := newPipeline(t, g, 10, time.Hour)
	p.Connected(10)
	p.BeginTx(100)
	p.Alert(&alertv1.Alert{AlertId: "a"})
	p.CommitTx(110, time.Now())
	if got := p.SafeLSN(); got != 10 {
		t.Fatalf("safe = %d before the alert was delivered, want 10", got)
	}
	g.release <- struct{}{}
	waitSafe(t, p, 110)
}

func TestBatches(t *testing.T) {
	g := &gate{}
	p := newPipeline(t, g, 3, time.Hour)
	p.Connected(0)
	p.BeginTx(100)
	for i := range 7 {
		p.Entry("public.t", entry(100, uint32(i)))
	}
	// Full batches go while the transaction is still being read; the rest
	// waits for its commit (BatchWait is an hour).
	waitFor(t, "two full batches", func() bool { return len(g.sizes()) == 2 })
	p.CommitTx(110, time.Now())
	waitSafe(t, p, 110)
	var idx []uint32
	for _, b := range g.batches {
		if len(b) > 3 {
			t.Errorf("batch of %d entries, BatchMax is 3", len(b))
		}
		for _, e := range b {
			idx = append(idx, e.TxIndex)
		}
	}
	for i, v := range idx {
		if v != uint32(i) {
			t.Fatalf("entries sent in order %v", idx)
		}
	}
}

func TestBatchWait(t *testing.T) {
	g := &gate{}
	p := newPipeline(t, g, 100, 20*time.Millisecond)
	p.Connected(0)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	// The transaction stays open: BatchWait sends the partial batch.
	waitFor(t, "partial batch", func() bool { return len(g.sizes()) == 1 })
}

func TestBackpressure(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	p := New(Options{Tables: []string{"public.t"}, BatchMax: 1, MaxPending: 2, Appender: g, Alerts: g})
	defer p.Close(context.Background())
	p.Connected(0)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	if !p.HasRoom() {
		t.Fatal("no room after one entry")
	}
	p.Entry("public.t", entry(100, 1))
	if p.HasRoom() {
		t.Fatal("room beyond MaxPending")
	}
	g.release <- struct{}{}
	<-p.Changed()
	waitFor(t, "room", p.HasRoom)
	p.CommitTx(110, time.Now())
	g.release <- struct{}{}
}

func TestNewConnectionForgetsUnfinishedTransactions(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	p := newPipeline(t, g, 10, time.Hour)
	p.Connected(50)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.Observe(150)
	// The connection drops before COMMIT: the transaction comes again.
	p.Connected(40)
	if got := p.SafeLSN(); got != 100 {
		t.Fatalf("safe = %d after reconnecting, want 100 (never past the unfinished transaction)", got)
	}
	// The abandoned entry is still delivered.
	waitFor(t, "abandoned entry in flight", func() bool { return g.calls.Load() == 1 })
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.CommitTx(120, time.Now())
	g.release <- struct{}{} // the first connection's entry
	g.release <- struct{}{} // its replay
	waitSafe(t, p, 120)
}

func TestCloseFlushes(t *testing.T) {
	g := &gate{}
	p := New(Options{Tables: []string{"public.t"}, BatchMax: 10, BatchWait: time.Hour, Appender: g, Alerts: g})
	p.Connected(0)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.Alert(&alertv1.Alert{})
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(g.sizes()) != 1 || g.alerts != 1 {
		t.Errorf("batches %v, alerts %d after Close", g.sizes(), g.alerts)
	}
}

func TestCloseGivesUp(t *testing.T) {
	g := &gate{release: make(chan struct{})} // never released
	p := New(Options{Tables: []string{"public.t"}, BatchMax: 10, Appender: g, Alerts: g})
	p.Connected(0)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.CommitTx(110, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); err == nil {
		t.Fatal("Close reported success with an entry unacknowledged")
	}
	if got := p.SafeLSN(); got != 0 {
		t.Errorf("safe = %d, want 0", got)
	}
}

// orderedLog is a witness log with the witness's ordering rules: replays
// (positions at or before the last) are skipped, and a batch whose
// predecessor is not logged yet is refused. Calls are delayed at random,
// and one in five "fails" before reaching the log (the client retries it
// after a backoff), so pipelined batches overtake each other.
type orderedLog struct {
	mu      sync.Mutex
	log     []witnessclient.Position
	refused int
	rng     *rand.Rand
}

func (l *orderedLog) AppendAfter(ctx context.Context, _ string, after witnessclient.Position, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	for {
		l.mu.Lock()
		d := time.Duration(l.rng.IntN(300)) * time.Microsecond
		lost := l.rng.IntN(5) == 0
		l.mu.Unlock()
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !lost {
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	before := func(a, b witnessclient.Position) bool {
		return a.CommitLSN < b.CommitLSN || (a.CommitLSN == b.CommitLSN && a.TxIndex < b.TxIndex)
	}
	if after != (witnessclient.Position{}) && (len(l.log) == 0 || before(l.log[len(l.log)-1], after)) {
		l.refused++
		return nil, fmt.Errorf("%w: after %v", witnessclient.ErrPredecessorPending, after)
	}
	resp := &witnessv1.AppendResponse{}
	for _, e := range entries {
		p := witnessclient.Position{CommitLSN: e.GetCommitLsn(), TxIndex: e.GetTxIndex()}
		if len(l.log) > 0 && !before(l.log[len(l.log)-1], p) {
			resp.Duplicates++
			continue
		}
		l.log = append(l.log, p)
	}
	return resp, nil
}

// TestPipelinedAppendsLoseNothing keeps eight Appends in flight against a
// log that reorders and loses calls: every entry is logged exactly once,
// in order, and the safe LSN covers every transaction.
func TestPipelinedAppendsLoseNothing(t *testing.T) {
	l := &orderedLog{rng: rand.New(rand.NewPCG(1, 2))}
	g := &gate{}
	p := New(Options{Tables: []string{"public.t"}, BatchMax: 7, BatchWait: 0, MaxPending: 64, Inflight: 8, Appender: l, Alerts: g})
	const txs, perTx = 400, 5
	for tx := range txs {
		for !p.HasRoom() {
			<-p.Changed()
		}
		lsn := uint64(1000 + 10*tx)
		p.BeginTx(lsn)
		for i := range perTx {
			p.Entry("public.t", &witnessv1.Entry{CommitLsn: lsn, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT})
		}
		p.CommitTx(lsn+1, time.Now())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.log) != txs*perTx {
		t.Fatalf("log holds %d entries, want %d (refused %d)", len(l.log), txs*perTx, l.refused)
	}
	for i, pos := range l.log {
		want := witnessclient.Position{CommitLSN: uint64(1000 + 10*(i/perTx)), TxIndex: uint32(i % perTx)}
		if pos != want {
			t.Fatalf("entry %d is %v, want %v", i, pos, want)
		}
	}
	if l.refused == 0 {
		t.Fatalf("no batch was ever refused: the test did not exercise out-of-order arrival")
	}
	if got, want := p.SafeLSN(), uint64(1000+10*(txs-1)+1); got != want {
		t.Fatalf("safe LSN %d, want %d", got, want)
	}
	t.Logf("%d entries, %d refusals resent", len(l.log), l.refused)
}

// slowLog answers every Append after delay and records how many were in
// flight at once.
type slowLog struct {
	delay        time.Duration
	mu           sync.Mutex
	now, most, n int
}

func (l *slowLog) AppendAfter(ctx context.Context, _ string, _ witnessclient.Position, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error) {
	l.mu.Lock()
	l.now++
	l.n++
	l.most = max(l.most, l.now)
	l.mu.Unlock()
	defer func() { l.mu.Lock(); l.now--; l.mu.Unlock() }()
	select {
	case <-time.After(l.delay):
		return &witnessv1.AppendResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestInflightOnlyWhenSlow: while the quorum answers within BatchWait, a
// table has one Append in flight and the entries that arrive meanwhile go
// in the next batch; when answers take longer, Appends overlap.
func TestInflightOnlyWhenSlow(t *testing.T) {
	run := func(delay, batchWait time.Duration) *slowLog {
		l := &slowLog{delay: delay}
		p := New(Options{Tables: []string{"public.t"}, BatchMax: 1000, BatchWait: batchWait, Inflight: 4, Appender: l, Alerts: &gate{}})
		for tx := range 60 {
			lsn := uint64(100 + tx)
			p.BeginTx(lsn)
			p.Entry("public.t", &witnessv1.Entry{CommitLsn: lsn, Op: witnessv1.Op_OP_INSERT})
			p.CommitTx(lsn+1, time.Now())
			time.Sleep(time.Millisecond)
		}
		// Let the queue drain before Close, which sends what is left at once.
		deadline := time.Now().Add(10 * time.Second)
		for p.Pending() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := run(5*time.Millisecond, time.Second); l.most != 1 || l.n >= 60 {
		t.Errorf("fast quorum: %d Appends, at most %d in flight; want one at a time, batched", l.n, l.most)
	}
	if l := run(40*time.Millisecond, 5*time.Millisecond); l.most < 2 {
		t.Errorf("slow quorum: at most %d Appends in flight; want them to overlap", l.most)
	}
}

// TestWitnessed reports a transaction once every entry of it is
// acknowledged and its alerts are delivered, whether the acknowledgement
// comes before or after its commit record; transactions without entries
// are not reported.
func TestWitnessed(t *testing.T) {
	g := &gate{release: make(chan struct{})}
	type report struct{ commit, read, witnessed time.Time }
	var (
		mu  sync.Mutex
		got []report
	)
	p := New(Options{Tables: []string{"public.t"}, BatchMax: 2, BatchWait: time.Hour, Appender: g, Alerts: g,
		OnWitnessed: func(c, r, w time.Time) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, report{c, r, w})
		}})
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p.Close(ctx)
	})
	reports := func() []report {
		mu.Lock()
		defer mu.Unlock()
		return append([]report(nil), got...)
	}
	p.Connected(10)

	// No entries: never reported.
	p.BeginTx(50)
	p.CommitTx(60, time.Now())

	// Acknowledged after its commit record, with an alert delivered last.
	c1 := time.Now().Add(-time.Second)
	p.BeginTx(100)
	p.Entry("public.t", entry(100, 0))
	p.Alert(&alertv1.Alert{AlertId: "a"})
	p.CommitTx(110, c1)
	waitFor(t, "two calls", func() bool { return g.calls.Load() == 2 })
	g.release <- struct{}{}
	time.Sleep(20 * time.Millisecond)
	if n := len(reports()); n != 0 {
		t.Fatalf("%d transactions reported with a call still unanswered", n)
	}
	g.release <- struct{}{}
	waitFor(t, "first report", func() bool { return len(reports()) == 1 })
	r := reports()[0]
	if !r.commit.Equal(c1) || r.read.Before(c1) || r.witnessed.Before(r.read) {
		t.Fatalf("report = %+v, want commit %v then read then witnessed", r, c1)
	}

	// A full batch goes out before the commit record; reported at commit.
	p.BeginTx(200)
	p.Entry("public.t", entry(200, 0))
	p.Entry("public.t", entry(200, 1))
	waitFor(t, "third call", func() bool { return g.calls.Load() == 3 })
	g.release <- struct{}{}
	waitFor(t, "batch acknowledged", func() bool { return p.Pending() == 0 })
	if n := len(reports()); n != 1 {
		t.Fatalf("%d reports before the commit record, want 1", n)
	}
	c2 := time.Now()
	p.CommitTx(210, c2)
	if rs := reports(); len(rs) != 2 || !rs[1].commit.Equal(c2) {
		t.Fatalf("reports = %+v, want the second at commit %v", rs, c2)
	}
}
