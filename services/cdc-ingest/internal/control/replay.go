package control

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/witnz/witnz/libs/commitment"
)

// Defaults of NewReplayGuard.
const (
	// ReplayWindow is how far a message's IssuedAt may be from the time it
	// was written to the WAL.
	ReplayWindow = 10 * time.Minute
	// DefaultMaxNonces bounds the nonces a ReplayGuard remembers.
	DefaultMaxNonces = 1 << 16
)

// Errors of ReplayGuard.Check.
var (
	// ErrReplayed means the nonce was already seen at another WAL position:
	// a genuine message was written to the WAL again.
	ErrReplayed = errors.New("control message replayed: its nonce was already seen at another WAL position")
	// ErrStale means IssuedAt is outside the window around the time the
	// message was written.
	ErrStale = errors.New("control message is outside the replay window")
)

// ReplayGuard remembers the nonces of authentic messages seen within the
// replay window. Reading the same WAL record again (a reconnect replays
// the stream from the slot) is not a replay; the same nonce at another
// WAL position is. Only messages whose MAC verified reach it, so its
// memory grows only with genuine messages; it keeps at most max nonces,
// forgetting the oldest first. It is safe for concurrent use.
//
// Messages are only ever written by cdc-ingest itself (through Seal). Once
// Since has named the WAL position at which this process first streamed
// the slot, a message written after it must be one this process sealed: a genuine message of an earlier run (or of another process that
// held the slot before) written to the WAL again after that (the nonce
// memory of this process never saw it) is refused as a replay.
type ReplayGuard struct {
	window time.Duration
	max    int

	mu     sync.Mutex
	seen   map[string]uint64 // nonce → WAL position
	order  []seenNonce       // insertion order, for expiry
	since  uint64            // WAL position this process first streamed the slot at; 0: not set
	issued map[string]time.Time
}

type seenNonce struct {
	nonce  string
	issued time.Time
}

// NewReplayGuard returns a guard with window ReplayWindow that remembers
// at most DefaultMaxNonces nonces.
func NewReplayGuard() *ReplayGuard { return newReplayGuard(ReplayWindow, DefaultMaxNonces) }

func newReplayGuard(window time.Duration, max int) *ReplayGuard {
	return &ReplayGuard{window: window, max: max, seen: map[string]uint64{}, issued: map[string]time.Time{}}
}

// Since makes every message written after lsn — the server's WAL insert
// position when this process first streamed the slot — need a nonce this
// guard sealed (it may have sealed some before). Messages are placed by
// the end of their record, so a message that ends exactly at lsn was
// written before it.
func (g *ReplayGuard) Since(lsn uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.since = lsn
}

// Seal seals m as the package's Seal does, with a fresh nonce it
// remembers as issued by this process.
func (g *ReplayGuard) Seal(k commitment.Key, m Message) ([]byte, error) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return nil, fmt.Errorf("control message nonce: %w", err)
	}
	m.Nonce = hex.EncodeToString(n[:])
	now := time.Now()
	if m.IssuedAt == 0 {
		m.IssuedAt = now.UnixMicro()
	}
	g.mu.Lock()
	for nonce, at := range g.issued {
		if now.Sub(at) > 2*g.window {
			delete(g.issued, nonce)
		}
	}
	g.issued[m.Nonce] = now
	g.mu.Unlock()
	return Seal(k, m)
}

// Check accepts m, read at WAL position lsn and written at time at (the
// commit time of its transaction, or the time it arrived for a
// non-transactional message), or says why not.
func (g *ReplayGuard) Check(m Message, lsn uint64, at time.Time) error {
	issued := m.Issued()
	if d := at.Sub(issued); d > g.window || d < -g.window {
		return fmt.Errorf("%w: issued at %s, written at %s (window %s)", ErrStale, issued.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339), g.window)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expire(at)
	// A message's position is the end of its WAL record (pgoutput's message
	// LSN), so one written before since ends at since at most.
	if _, ours := g.issued[m.Nonce]; g.since != 0 && lsn > g.since && !ours {
		return fmt.Errorf("%w: written at %X/%X, after this cdc-ingest first streamed the slot (at %X/%X), but not issued by it: a genuine message of an earlier run written again, or a second cdc-ingest on the same slot", ErrReplayed, lsn>>32, uint32(lsn), g.since>>32, uint32(g.since))
	}
	if prev, ok := g.seen[m.Nonce]; ok {
		if prev == lsn {
			return nil
		}
		return fmt.Errorf("%w (first at %d)", ErrReplayed, prev)
	}
	g.seen[m.Nonce] = lsn
	g.order = append(g.order, seenNonce{nonce: m.Nonce, issued: issued})
	if len(g.order) > g.max {
		delete(g.seen, g.order[0].nonce)
		g.order[0] = seenNonce{}
		g.order = g.order[1:]
	}
	return nil
}

// expire forgets nonces whose messages are stale anyway as of now: any
// copy written later is refused by the window check. Twice the window
// leaves room for the skew between the server clock (commit times) and
// ours (non-transactional messages).
func (g *ReplayGuard) expire(now time.Time) {
	n := 0
	for n < len(g.order) && now.Sub(g.order[n].issued) > 2*g.window {
		delete(g.seen, g.order[n].nonce)
		n++
	}
	if n > 0 {
		g.order = append(g.order[:0], g.order[n:]...)
	}
}

// Len is the number of nonces remembered.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}
