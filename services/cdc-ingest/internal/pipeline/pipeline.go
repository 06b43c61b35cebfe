// Package pipeline batches the entries of each protected table into Append
// calls to the witness cluster, delivers alerts, and works out how far the
// replication slot may be confirmed: never past an entry or alert the
// witness quorum or the alert service has not acknowledged.
//
// Transactions arrive in commit order. Each one is tracked until its Commit
// has been read and every entry and alert it produced is acknowledged. The
// safe LSN is the end of the last transaction done in order (or a later
// keepalive position), but never beyond the commit LSN of the oldest
// transaction still in flight, so that PostgreSQL sends that transaction
// again after a crash.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/witnessclient"
)

// Appender commits a batch of one table's entries to the witness quorum,
// retrying until it succeeds or ctx ends. The batch follows the batch
// ending at after (zero: none); while the quorum has not logged that
// position, AppendAfter returns an error wrapping
// witnessclient.ErrPredecessorPending without retrying.
type Appender interface {
	AppendAfter(ctx context.Context, table string, after witnessclient.Position, entries []*witnessv1.Entry) (*witnessv1.AppendResponse, error)
}

// AlertSender delivers alerts, retrying until it succeeds or ctx ends.
type AlertSender interface {
	Send(ctx context.Context, alerts []*alertv1.Alert) error
}

// Options configure a Pipeline.
type Options struct {
	// Tables are the protected tables ("schema.table").
	Tables []string
	// BatchMax is the most entries per Append.
	BatchMax int
	// BatchWait is the longest a batch waits to fill while a transaction
	// is still being read; with no open transaction it is sent at once.
	BatchWait time.Duration
	// MaxPending bounds entries and alerts held in memory; HasRoom reports
	// false beyond it. Zero means 8 × BatchMax.
	MaxPending int
	// Inflight is the most Appends of one table in flight at once; each
	// names the batch it follows, so the witness never logs one past a
	// predecessor that failed. Zero means 1 (one at a time). A batch goes
	// out beside others only when the oldest has been in flight for
	// BatchWait, or BatchMax entries wait: while the quorum answers
	// quickly, waiting for the answer batches more per Raft entry than
	// sending at once would.
	Inflight int
	Appender Appender
	Alerts   AlertSender
	// OnAppend, when set, is told of every acknowledged Append: the table,
	// the entries sent, the replays the witness skipped, and how long the
	// call took.
	OnAppend func(table string, entries, duplicates int, took time.Duration)
	// OnResend, when set, is told each time a pipelined batch was refused
	// because the batch before it was not logged yet, and is sent again.
	OnResend func(table string)
	// OnWitnessed, when set, is told of each transaction with entries once
	// the quorum has acknowledged all of them (and its alerts were
	// delivered): its commit time (the server's clock), when its commit
	// record was read, and when it became witnessed. It is called without
	// the pipeline's lock held.
	OnWitnessed func(commitTime, read, witnessed time.Time)
}

// alertBatchMax bounds the alerts per IngestAlerts call.
const alertBatchMax = 256

type txn struct {
	commitLSN   uint64
	endLSN      uint64
	commitTime  time.Time
	read        time.Time // when the commit record was read
	outstanding int
	entries     int
	committed   bool
}

type item struct {
	entry *witnessv1.Entry
	tx    *txn
}

type alertItem struct {
	alert *alertv1.Alert
	tx    *txn
}

type queue struct {
	name      string
	items     []item
	since     time.Time // when items[0] was queued
	committed uint64
	wake      chan struct{}
	full      chan struct{} // a full batch is queued, or the pipeline closes
}

// Pipeline is safe for concurrent use; the replication reader calls the
// transaction methods from one goroutine.
type Pipeline struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	queues     map[string]*queue
	order      []*queue
	alerts     []alertItem
	alertWake  chan struct{}
	txns       []*txn // transactions of this connection not yet done, commit order
	cur        *txn   // transaction being read
	recv       uint64
	pending    int // entries and alerts queued or in flight
	lastCommit time.Time
	closing    bool

	changed chan struct{}
}

// New starts the workers: one per table and one for alerts.
func New(opts Options) *Pipeline {
	if opts.MaxPending == 0 {
		opts.MaxPending = 8 * opts.BatchMax
	}
	opts.Inflight = max(opts.Inflight, 1)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pipeline{
		opts:      opts,
		ctx:       ctx,
		cancel:    cancel,
		queues:    map[string]*queue{},
		alertWake: make(chan struct{}, 1),
		changed:   make(chan struct{}, 1),
	}
	for _, name := range opts.Tables {
		p.addLocked(name)
	}
	p.wg.Add(1)
	go p.alertWorker()
	return p
}

// AddTable starts the queue of a newly protected table; a table that has
// one keeps it.
func (p *Pipeline) AddTable(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	p.addLocked(name)
}

func (p *Pipeline) addLocked(name string) {
	if p.queues[name] != nil {
		return
	}
	q := &queue{name: name, wake: make(chan struct{}, 1), full: make(chan struct{}, 1)}
	p.queues[name] = q
	p.order = append(p.order, q)
	p.wg.Add(1)
	go p.tableWorker(q)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Connected starts tracking a new replication connection. Transactions of
// the previous connection that were not done are forgotten: PostgreSQL sends
// them again from the slot, and their entries still in flight are simply
// delivered twice (the witness skips replays). floor is a position known
// to be safe, the slot's confirmed flush LSN.
func (p *Pipeline) Connected(floor uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recv = max(floor, p.safeLocked())
	p.txns = nil
	p.cur = nil
	p.wakeQueuesLocked()
}

// BeginTx starts a transaction whose commit record is at commitLSN.
func (p *Pipeline) BeginTx(commitLSN uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = &txn{commitLSN: commitLSN}
	p.txns = append(p.txns, p.cur)
}

// Entry queues an entry of the current transaction for table.
func (p *Pipeline) Entry(table string, e *witnessv1.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queues[table]
	if len(q.items) == 0 {
		q.since = time.Now()
	}
	q.items = append(q.items, item{entry: e, tx: p.cur})
	p.cur.outstanding++
	p.cur.entries++
	p.pending++
	if n := len(q.items); n == 1 || n == p.opts.BatchMax {
		signal(q.wake)
		if n == p.opts.BatchMax {
			signal(q.full)
		}
	}
}

// Alert queues an alert raised by the current transaction; it is sent at
// once, without waiting for the witness.
func (p *Pipeline) Alert(a *alertv1.Alert) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.alerts = append(p.alerts, alertItem{alert: a, tx: p.cur})
	p.cur.outstanding++
	p.pending++
	signal(p.alertWake)
}

// CommitTx ends the current transaction; endLSN is the end of its commit
// record.
func (p *Pipeline) CommitTx(endLSN uint64, commitTime time.Time) {
	p.mu.Lock()
	t := p.cur
	t.committed = true
	t.endLSN = endLSN
	t.commitTime = commitTime
	t.read = time.Now()
	p.cur = nil
	// Every entry may have been acknowledged before the commit record came.
	already := t.outstanding == 0 && t.entries > 0
	p.advanceLocked()
	p.wakeQueuesLocked()
	p.mu.Unlock()
	if already {
		p.reportWitnessed([]*txn{t})
	}
}

// doneLocked counts one acknowledged entry or alert of t and notes t when
// that makes it witnessed.
func doneLocked(t *txn, out []*txn) []*txn {
	t.outstanding--
	if t.outstanding == 0 && t.committed && t.entries > 0 {
		out = append(out, t)
	}
	return out
}

// reportWitnessed tells OnWitnessed of ws; their commit and read times
// no longer change, so it runs without the lock.
func (p *Pipeline) reportWitnessed(ws []*txn) {
	if p.opts.OnWitnessed == nil || len(ws) == 0 {
		return
	}
	now := time.Now()
	for _, w := range ws {
		p.opts.OnWitnessed(w.commitTime, w.read, now)
	}
}

// wakeQueuesLocked lets batches that were waiting for more of the current
// transaction go.
func (p *Pipeline) wakeQueuesLocked() {
	for _, q := range p.order {
		if len(q.items) > 0 {
			signal(q.wake)
		}
	}
}

// Observe records a server position from a keepalive: every transaction
// committed before it has been sent to us.
func (p *Pipeline) Observe(walEnd uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recv = max(p.recv, walEnd)
}

// SafeLSN is the position the slot may be confirmed at.
func (p *Pipeline) SafeLSN() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.safeLocked()
}

func (p *Pipeline) safeLocked() uint64 {
	s := p.recv
	if len(p.txns) > 0 {
		s = min(s, p.txns[0].commitLSN)
	}
	return s
}

// advanceLocked retires the transactions at the front that are done.
func (p *Pipeline) advanceLocked() {
	n := 0
	for _, t := range p.txns {
		if !t.committed || t.outstanding > 0 {
			break
		}
		p.recv = max(p.recv, t.endLSN)
		p.lastCommit = t.commitTime
		n++
	}
	if n > 0 {
		clear(p.txns[:n])
		p.txns = p.txns[n:]
	}
}

// HasRoom reports whether the reader may queue more; when it may not, it
// waits on Changed.
func (p *Pipeline) HasRoom() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending < p.opts.MaxPending
}

// Pending counts entries and alerts not yet acknowledged.
func (p *Pipeline) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// Changed receives a value after acknowledgements: room was freed and the
// safe LSN may have moved.
func (p *Pipeline) Changed() <-chan struct{} { return p.changed }

// TableStatus is what the pipeline knows about one table.
type TableStatus struct {
	Name string
	// Committed counts entries the witness quorum acknowledged (replays it
	// skipped are not counted).
	Committed uint64
}

// Status reports per-table counts, the entries and alerts not yet
// acknowledged, and the commit time of the last transaction fully done.
func (p *Pipeline) Status() (tables []TableStatus, pending int, lastCommit time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.order {
		tables = append(tables, TableStatus{Name: q.name, Committed: q.committed})
	}
	return tables, p.pending, p.lastCommit
}

// Close delivers what is queued and stops the workers. When ctx ends
// first, delivery is abandoned (the slot was not confirmed past it, so
// PostgreSQL sends it again) and an error says how much was left.
func (p *Pipeline) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for _, q := range p.order {
		signal(q.wake)
		signal(q.full)
	}
	signal(p.alertWake)
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	defer p.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		p.cancel()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		return fmt.Errorf("%d entries and alerts were not acknowledged before the shutdown deadline; they will be read again from the slot", p.pending)
	}
}

// sent is a batch on its way to the witness quorum.
type sent struct {
	items   []item
	entries []*witnessv1.Entry
	after   witnessclient.Position // last position of the batch before it
	prev    <-chan struct{}        // closed when the batch before it is acknowledged
	done    chan struct{}          // closed when this one is acknowledged
	started time.Time
}

func (b *sent) finished() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// holdBeside waits, while other batches of q are in flight, until the
// oldest of them is acknowledged or has been in flight for BatchWait, or
// BatchMax entries are queued, and returns the batches still in flight.
func (p *Pipeline) holdBeside(q *queue, flying []*sent) []*sent {
	for len(flying) > 0 && flying[0].finished() {
		flying = flying[1:]
	}
	if len(flying) == 0 {
		return flying
	}
	oldest := flying[0]
	wait := p.opts.BatchWait - time.Since(oldest.started)
	if wait <= 0 {
		return flying
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		p.mu.Lock()
		full := len(q.items) >= p.opts.BatchMax || p.closing
		p.mu.Unlock()
		if full {
			return flying
		}
		select {
		case <-oldest.done:
			return flying
		case <-timer.C:
			return flying
		case <-q.full:
		case <-p.ctx.Done():
			return flying
		}
	}
}

// tableWorker sends the table's batches in order, up to Inflight at once.
// Each names the last position of the one before it: if that one failed
// and is being retried, the witness refuses this one rather than log it
// past the gap, and it goes again once its predecessor is acknowledged.
func (p *Pipeline) tableWorker(q *queue) {
	defer p.wg.Done()
	slots := make(chan struct{}, p.opts.Inflight)
	// A fixed set of senders, rather than a goroutine per batch: a sender's
	// stack has grown through the RPC client once and stays grown.
	batches := make(chan *sent, p.opts.Inflight)
	var senders sync.WaitGroup
	for range p.opts.Inflight {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for b := range batches {
				p.send(q, b)
				<-slots
			}
		}()
	}
	defer senders.Wait()
	defer close(batches)
	var after witnessclient.Position
	var prev <-chan struct{}
	var flying []*sent // in send order; finished ones are dropped lazily
	for {
		select {
		case slots <- struct{}{}:
		case <-p.ctx.Done():
			return
		}
		flying = p.holdBeside(q, flying)
		batch, ok := p.nextBatch(q)
		if !ok {
			return
		}
		b := &sent{items: batch, entries: make([]*witnessv1.Entry, len(batch)), after: after, prev: prev, done: make(chan struct{}), started: time.Now()}
		flying = append(flying, b)
		for i, it := range batch {
			b.entries[i] = it.entry
		}
		last := b.entries[len(b.entries)-1]
		after = witnessclient.Position{CommitLSN: last.GetCommitLsn(), TxIndex: last.GetTxIndex()}
		prev = b.done
		batches <- b
	}
}

// send delivers one batch, waiting for its predecessor whenever the
// witness says it has not logged it yet, and then acknowledges its items.
func (p *Pipeline) send(q *queue, b *sent) {
	var resp *witnessv1.AppendResponse
	// pause grows while the witness says the predecessor is not logged
	// although it was acknowledged (a new leader still applying what its
	// predecessor committed), so that the resends do not spin.
	pause := time.Duration(0)
	for {
		started := time.Now()
		var err error
		resp, err = p.opts.Appender.AppendAfter(p.ctx, q.name, b.after, b.entries)
		if errors.Is(err, witnessclient.ErrPredecessorPending) && b.prev != nil {
			if p.opts.OnResend != nil {
				p.opts.OnResend(q.name)
			}
			select {
			case <-b.prev:
			case <-p.ctx.Done():
				return
			}
			if pause > 0 {
				select {
				case <-time.After(pause):
				case <-p.ctx.Done():
					return
				}
			}
			pause = min(max(2*pause, time.Millisecond), 100*time.Millisecond)
			continue
		}
		if err != nil {
			return // only when Close gave up
		}
		if p.opts.OnAppend != nil {
			p.opts.OnAppend(q.name, len(b.entries), int(resp.GetDuplicates()), time.Since(started))
		}
		break
	}
	p.mu.Lock()
	q.committed += uint64(len(b.items)) - uint64(min(int(resp.GetDuplicates()), len(b.items)))
	p.pending -= len(b.items)
	var ws []*txn
	for _, it := range b.items {
		ws = doneLocked(it.tx, ws)
	}
	p.advanceLocked()
	p.mu.Unlock()
	close(b.done)
	signal(p.changed)
	p.reportWitnessed(ws)
}

// nextBatch waits for a batch to send: BatchMax entries, or fewer when no
// transaction is being read, BatchWait has passed, or the pipeline closes.
func (p *Pipeline) nextBatch(q *queue) ([]item, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		n := len(q.items)
		var wait time.Duration
		if n > 0 {
			wait = p.opts.BatchWait - time.Since(q.since)
			if n >= p.opts.BatchMax || p.closing || p.cur == nil || wait <= 0 {
				take := min(n, p.opts.BatchMax)
				batch := make([]item, take)
				copy(batch, q.items)
				rest := copy(q.items, q.items[take:])
				clear(q.items[rest:])
				q.items = q.items[:rest]
				q.since = time.Now()
				p.mu.Unlock()
				return batch, true
			}
		} else if p.closing {
			p.mu.Unlock()
			return nil, false
		}
		p.mu.Unlock()

		var timeout <-chan time.Time
		if n > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timeout = timer.C
		}
		select {
		case <-q.wake:
		case <-timeout:
		case <-p.ctx.Done():
			return nil, false
		}
	}
}

func (p *Pipeline) alertWorker() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		n := min(len(p.alerts), alertBatchMax)
		if n == 0 {
			closing := p.closing
			p.mu.Unlock()
			if closing {
				return
			}
			select {
			case <-p.alertWake:
				continue
			case <-p.ctx.Done():
				return
			}
		}
		batch := make([]alertItem, n)
		copy(batch, p.alerts)
		rest := copy(p.alerts, p.alerts[n:])
		clear(p.alerts[rest:])
		p.alerts = p.alerts[:rest]
		p.mu.Unlock()

		msgs := make([]*alertv1.Alert, n)
		for i, a := range batch {
			msgs[i] = a.alert
		}
		if err := p.opts.Alerts.Send(p.ctx, msgs); err != nil {
			return // only when Close gave up
		}
		p.mu.Lock()
		p.pending -= n
		var ws []*txn
		for _, a := range batch {
			ws = doneLocked(a.tx, ws)
		}
		p.advanceLocked()
		p.mu.Unlock()
		signal(p.changed)
		p.reportWitnessed(ws)
	}
}
