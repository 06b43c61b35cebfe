package api

import (
	"context"
	"sync"
	"time"

	"github.com/witnz/witnz/services/witness/internal/fsm"
)

// orderWait bounds how long a pipelined Append waits for the batch it
// follows to reach Raft first. Reordered requests of a live pipeline
// arrive microseconds apart; a predecessor that never comes (it failed on
// the client's side) costs this much before the state machine refuses the
// batch and the client resends it after the predecessor.
const orderWait = 50 * time.Millisecond

// appendOrder hands a table's pipelined Appends to Raft in the order they
// follow each other. A client keeps several Appends of a table in flight;
// their handlers race to Raft, and the one proposed before its predecessor
// would be refused by the state machine (ErrPredecessorPending) and sent
// again a round trip later. So a handler whose batch follows a position
// not yet proposed by this node (nor applied) waits, briefly, for it.
type appendOrder struct {
	mu     sync.Mutex
	tables map[string]*proposed
}

// proposed is the newest position of a table's batches handed to Raft by
// this node, and a channel closed when it moves.
type proposed struct {
	last    fsm.Position
	changed chan struct{}
}

func (o *appendOrder) table(name string) *proposed {
	if o.tables == nil {
		o.tables = map[string]*proposed{}
	}
	p, ok := o.tables[name]
	if !ok {
		p = &proposed{changed: make(chan struct{})}
		o.tables[name] = p
	}
	return p
}

// wait returns once after has been proposed by this node or applied
// (applied is the table's last applied position, if any), after orderWait,
// or when ctx ends.
func (o *appendOrder) wait(ctx context.Context, name string, after fsm.Position, applied *fsm.Position) {
	if after == (fsm.Position{}) || (applied != nil && !after.After(*applied)) {
		return
	}
	timer := time.NewTimer(orderWait)
	defer timer.Stop()
	for {
		o.mu.Lock()
		p := o.table(name)
		reached, changed := !after.After(p.last), p.changed
		o.mu.Unlock()
		if reached {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// proposedUpTo records that a batch ending at last was handed to Raft.
func (o *appendOrder) proposedUpTo(name string, last fsm.Position) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.table(name)
	if last.After(p.last) {
		p.last = last
		close(p.changed)
		p.changed = make(chan struct{})
	}
}
