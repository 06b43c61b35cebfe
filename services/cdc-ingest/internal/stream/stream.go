// Package stream runs cdc-ingest's replication loop: it reads pgoutput from
// the slot, feeds the decoder and the pipeline, confirms the slot only as
// far as the pipeline says is safe, answers keepalives, reconnects with
// backoff when the connection drops, and on shutdown flushes what is
// pending before the last confirmation.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/pgsetup"
	"github.com/witnz/witnz/services/cdc-ingest/internal/backoff"
	"github.com/witnz/witnz/services/cdc-ingest/internal/capture"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pipeline"
)

// Defaults of Options.
const (
	DefaultStatusInterval = 10 * time.Second
	DefaultFlushTimeout   = 10 * time.Second
	// confirmDelay bounds how long a newly safe position waits before it is
	// confirmed to PostgreSQL.
	confirmDelay = 100 * time.Millisecond
)

// Options configure a Stream.
type Options struct {
	DSN         string
	Slot        string
	Publication string
	// Tables reports the protected tables for Status.
	Tables   func() []*ingestv1.ProtectedTable
	DB       *pgsource.DB
	Decoder  *capture.Decoder
	Pipeline *pipeline.Pipeline
	Log      *slog.Logger
	// StatusInterval is how often a standby status goes out even when the
	// position did not move; PostgreSQL's wal_sender_timeout (60 s by
	// default) must be well above it.
	StatusInterval time.Duration
	// FlushTimeout bounds the delivery of pending entries at shutdown.
	FlushTimeout time.Duration
	// OnFirstStart, when set, is called once, when this process first
	// streams the slot, with the server's WAL insert position taken just
	// before: every change at or after it reaches the slot while this
	// process holds it.
	OnFirstStart func(at pglogrepl.LSN)
}

// Stream is the replication loop.
type Stream struct {
	opts      Options
	retry     backoff.Policy
	streaming atomic.Bool
	confirmed atomic.Uint64 // last position sent to PostgreSQL

	// turn is held by the connection loop while a connection runs and by
	// Exclusive while its function runs.
	turn   chan struct{}
	exclMu sync.Mutex // one Exclusive at a time
	connMu sync.Mutex
	// stopConn ends the running connection so that Exclusive gets its turn.
	stopConn context.CancelFunc
	paused   atomic.Bool
	started  bool // the slot was streamed once; only Run's goroutine uses it
}

// New returns a stream; Run starts it.
func New(opts Options) *Stream {
	if opts.StatusInterval == 0 {
		opts.StatusInterval = DefaultStatusInterval
	}
	if opts.FlushTimeout == 0 {
		opts.FlushTimeout = DefaultFlushTimeout
	}
	return &Stream{opts: opts, retry: backoff.Default, turn: make(chan struct{}, 1)}
}

// Exclusive stops streaming (confirming what the witness acknowledged),
// runs fn while no replication connection is open, and lets the stream
// resume from the slot afterwards. Changes committed meanwhile wait in the
// slot; nothing is lost. The decoder and the pipeline's table set may be
// changed inside fn.
func (s *Stream) Exclusive(ctx context.Context, fn func(context.Context) error) error {
	s.exclMu.Lock()
	defer s.exclMu.Unlock()
	s.paused.Store(true)
	defer s.paused.Store(false)
	// Run may have taken the turn but not yet published how to stop its
	// connection: ask again until the turn is ours.
	for taken := false; !taken; {
		s.connMu.Lock()
		if s.stopConn != nil {
			s.stopConn()
		}
		s.connMu.Unlock()
		select {
		case s.turn <- struct{}{}:
			taken = true
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-s.turn }()
	return fn(ctx)
}

// Confirmed is the last position confirmed to PostgreSQL.
func (s *Stream) Confirmed() pglogrepl.LSN { return pglogrepl.LSN(s.confirmed.Load()) }

// Paused reports whether an Exclusive function holds the stream.
func (s *Stream) Paused() bool { return s.paused.Load() }

// Streaming reports whether the replication stream is connected.
func (s *Stream) Streaming() bool { return s.streaming.Load() }

// Run streams until ctx ends, reconnecting after failures, then flushes the
// pipeline and sends the last confirmation. It returns nil after a clean
// shutdown.
func (s *Stream) Run(ctx context.Context) error {
	for attempt := 0; ; {
		select {
		case s.turn <- struct{}{}:
		case <-ctx.Done():
			return s.finish(nil)
		}
		cctx, stop := context.WithCancel(ctx)
		s.connMu.Lock()
		s.stopConn = stop
		s.connMu.Unlock()
		started := time.Now()
		repl, err := s.connect(cctx)
		s.connMu.Lock()
		s.stopConn = nil
		s.connMu.Unlock()
		// Only Exclusive cancels cctx while ctx lives; look before stop()
		// cancels it too, or every failure would be retried at once,
		// silently and without backoff.
		asked := cctx.Err() != nil
		stop()
		if ctx.Err() != nil {
			<-s.turn
			return s.finish(repl)
		}
		if asked {
			// Exclusive asked for the turn.
			s.closeConn(repl)
			<-s.turn
			continue
		}
		<-s.turn
		if time.Since(started) > time.Minute {
			attempt = 0
		}
		s.opts.Log.Warn("replication stream lost; reconnecting", "attempt", attempt+1, "error", err)
		if s.retry.Wait(ctx, attempt) != nil {
			return s.finish(nil)
		}
		attempt++
	}
}

// finish flushes the pipeline (bounded by FlushTimeout), confirms what the
// witness acknowledged, and closes the connection.
func (s *Stream) finish(repl *pgsource.Repl) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.FlushTimeout)
	defer cancel()
	if err := s.opts.Pipeline.Close(ctx); err != nil {
		s.opts.Log.Warn("shutdown before every entry was acknowledged", "error", err)
	}
	if repl == nil {
		return nil
	}
	s.closeConn(repl)
	s.opts.Log.Info("replication stream closed", "confirmed_flush_lsn", pglogrepl.LSN(s.confirmed.Load()).String())
	return nil
}

// closeConn confirms what the witness acknowledged and closes repl.
func (s *Stream) closeConn(repl *pgsource.Repl) {
	if repl == nil {
		return
	}
	if safe := s.opts.Pipeline.SafeLSN(); safe > s.confirmed.Load() {
		if err := repl.SendStatus(pglogrepl.LSN(safe)); err != nil {
			s.opts.Log.Warn("slot confirmation failed", "lsn", pglogrepl.LSN(safe).String(), "error", err)
		} else {
			s.confirmed.Store(safe)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := repl.Close(ctx); err != nil {
		s.opts.Log.Debug("close replication connection", "error", err)
	}
}

// connect runs one replication connection. When ctx ends it returns the
// still-open connection for the last confirmation; on any failure it
// closes the connection and returns the error.
func (s *Stream) connect(ctx context.Context) (_ *pgsource.Repl, err error) {
	repl, err := pgsource.ConnectReplication(ctx, s.opts.DSN)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			repl.Close(cctx)
			cancel()
		}
	}()
	slot, err := s.opts.DB.Slot(ctx, s.opts.Slot)
	if errors.Is(err, pgsetup.ErrNoSlot) {
		// The product never drops its slot; someone else did. Creating a
		// new one would silently skip what happened meanwhile: the monitor
		// raises the alert and the operator re-protects (new baselines).
		return nil, fmt.Errorf("replication slot %s is gone (someone dropped it): changes made since it was dropped cannot be read; run `witnz init` to create it again, then `witnz protect` each table to take new baselines", s.opts.Slot)
	}
	if err != nil {
		return nil, err
	}
	if err := pgsetup.CheckSlot(s.opts.Slot, s.opts.DB.Database, slot); err != nil {
		return nil, err
	}
	s.opts.Pipeline.Connected(uint64(slot.ConfirmedFlushLSN))
	s.opts.Decoder.Reset()
	// The position before the first start is read only until the slot was
	// streamed once.
	var at pglogrepl.LSN
	first := !s.started && s.opts.OnFirstStart != nil
	if first {
		if at, err = s.opts.DB.InsertLSN(ctx); err != nil {
			return nil, fmt.Errorf("read the server's WAL position: %w", err)
		}
	}
	if err := repl.Start(ctx, s.opts.Slot, s.opts.Publication, 0); err != nil {
		return nil, err
	}
	s.started = true
	if first {
		s.opts.OnFirstStart(at)
	}
	s.streaming.Store(true)
	defer s.streaming.Store(false)
	s.opts.Log.Info("streaming", "slot", s.opts.Slot, "publication", s.opts.Publication, "from", slot.ConfirmedFlushLSN.String())

	c := confirmer{s: s, repl: repl, sent: max(s.confirmed.Load(), uint64(slot.ConfirmedFlushLSN)), sentAt: time.Now()}
	pipe := s.opts.Pipeline
	for {
		for !pipe.HasRoom() {
			select {
			case <-ctx.Done():
				return repl, nil
			case <-pipe.Changed():
			case <-time.After(confirmDelay):
			}
			if err := c.maybe(false); err != nil {
				return nil, err
			}
		}
		rctx, cancel := context.WithDeadline(ctx, c.nextDeadline())
		msg, err := repl.Receive(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return repl, nil
		case errors.Is(err, pgsource.ErrTimeout):
		case err != nil:
			return nil, err
		case msg.Keepalive != nil:
			pipe.Observe(uint64(msg.Keepalive.ServerWALEnd))
			if msg.Keepalive.ReplyRequested {
				if err := c.maybe(true); err != nil {
					return nil, err
				}
			}
		case msg.XLogData != nil:
			if err := s.opts.Decoder.Handle(ctx, msg.XLogData.WALStart, msg.XLogData.WALData); err != nil {
				return nil, fmt.Errorf("decode WAL at %s: %w", msg.XLogData.WALStart, err)
			}
		}
		if err := c.maybe(false); err != nil {
			return nil, err
		}
	}
}

// confirmer sends standby status updates: promptly when the safe position
// moves, every StatusInterval regardless, and when PostgreSQL asks.
type confirmer struct {
	s      *Stream
	repl   *pgsource.Repl
	sent   uint64
	sentAt time.Time
}

func (c *confirmer) maybe(force bool) error {
	safe := c.s.opts.Pipeline.SafeLSN()
	since := time.Since(c.sentAt)
	if !force && since < c.s.opts.StatusInterval && (safe <= c.sent || since < confirmDelay) {
		return nil
	}
	pos := max(safe, c.sent)
	if err := c.repl.SendStatus(pglogrepl.LSN(pos)); err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	c.sent, c.sentAt = pos, time.Now()
	c.s.confirmed.Store(pos)
	return nil
}

// nextDeadline is when Receive should give up waiting so that a status
// goes out on time: soon while entries are in flight, else at the next
// periodic update.
func (c *confirmer) nextDeadline() time.Time {
	if c.s.opts.Pipeline.SafeLSN() > c.sent || c.s.opts.Pipeline.Pending() > 0 {
		return time.Now().Add(confirmDelay)
	}
	return c.sentAt.Add(c.s.opts.StatusInterval)
}

// Status reports the pipeline's state for IngestService.GetStatus. PostgreSQL
// positions are read from the server when it answers.
func (s *Stream) Status(ctx context.Context) *ingestv1.GetStatusResponse {
	resp := &ingestv1.GetStatusResponse{
		SlotName:    s.opts.Slot,
		Publication: s.opts.Publication,
		Streaming:   s.Streaming(),
	}
	confirmed := pglogrepl.LSN(s.confirmed.Load())
	if slot, err := s.opts.DB.Slot(ctx, s.opts.Slot); err == nil {
		confirmed = slot.ConfirmedFlushLSN
	}
	resp.ConfirmedFlushLsn = confirmed.String()
	if server, err := s.opts.DB.ServerLSN(ctx); err == nil {
		resp.ServerLsn = server.String()
		if server > confirmed {
			resp.LagBytes = uint64(server - confirmed)
		}
	}
	tables, pending, last := s.opts.Pipeline.Status()
	committed := make(map[string]uint64, len(tables))
	for _, t := range tables {
		committed[t.Name] = t.Committed
	}
	for _, t := range s.opts.Tables() {
		t.EntriesCommitted = committed[t.GetName()]
		resp.Tables = append(resp.Tables, t)
	}
	resp.PendingEntries = uint64(pending)
	if !last.IsZero() {
		resp.LastCommitAt = timestamppb.New(last)
	}
	return resp
}
