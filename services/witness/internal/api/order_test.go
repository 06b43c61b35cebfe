package api

import (
	"context"
	"testing"
	"time"

	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// TestAppendOrder: a handler whose batch follows one not yet proposed waits
// for it, and only for it; a predecessor that never comes costs orderWait.
func TestAppendOrder(t *testing.T) {
	var o appendOrder
	const table = "public.t"
	p := func(lsn uint64) fsm.Position { return fsm.Position{CommitLSN: lsn, TxIndex: 3} }
	ctx := context.Background()

	start := time.Now()
	o.wait(ctx, table, fsm.Position{}, nil) // no predecessor
	applied := p(10)
	o.wait(ctx, table, p(10), &applied) // already applied
	if d := time.Since(start); d > orderWait/2 {
		t.Fatalf("waited %s with nothing to wait for", d)
	}

	got := make(chan fsm.Position, 2)
	go func() { o.wait(ctx, table, p(30), nil); got <- p(30) }()
	go func() { o.wait(ctx, table, p(20), nil); got <- p(20) }()
	time.Sleep(5 * time.Millisecond)
	o.proposedUpTo(table, p(20)) // the batch ending at 20: the one after 20 may go
	if first := <-got; first != p(20) {
		t.Fatalf("the batch after %v went before the one after 20", first)
	}
	o.proposedUpTo(table, p(30))
	if second := <-got; second != p(30) {
		t.Fatalf("second: %v", second)
	}
	// Positions only move forward.
	o.proposedUpTo(table, p(25))
	start = time.Now()
	o.wait(ctx, table, p(30), nil)
	if d := time.Since(start); d > orderWait/2 {
		t.Fatalf("waited %s for a proposed position", d)
	}

	// A predecessor that never comes: the handler goes after orderWait.
	start = time.Now()
	o.wait(ctx, table, p(40), nil)
	if d := time.Since(start); d < orderWait || d > 10*orderWait {
		t.Fatalf("waited %s for a missing predecessor, want about %s", d, orderWait)
	}
	// Another table is independent.
	start = time.Now()
	o.proposedUpTo("public.u", p(99))
	o.wait(ctx, "public.u", p(99), nil)
	if d := time.Since(start); d > orderWait/2 {
		t.Fatalf("public.u waited %s", d)
	}
}
