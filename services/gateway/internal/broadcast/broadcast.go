// Package broadcast fans values out in-process to many subscribers without
// letting a slow one hold up the others or grow memory: every subscriber
// has a bounded buffer, and a subscriber whose buffer is full when a value
// arrives is dropped (its Dropped channel closes) instead of being waited
// for.
package broadcast

import (
	"sync"
	"sync/atomic"
)

// Broadcaster delivers every published value to every current subscriber
// whose filter accepts it.
type Broadcaster[T any] struct {
	buffer int

	mu   sync.Mutex
	subs map[*Subscription[T]]struct{}

	dropped atomic.Uint64
}

// New returns a Broadcaster whose subscribers each buffer up to buffer
// values.
func New[T any](buffer int) *Broadcaster[T] {
	return &Broadcaster[T]{buffer: max(buffer, 1), subs: map[*Subscription[T]]struct{}{}}
}

// Subscription is one subscriber's view of a Broadcaster.
type Subscription[T any] struct {
	b       *Broadcaster[T]
	c       chan T
	filter  func(T) bool
	dropped chan struct{}
}

// Subscribe registers a subscriber; it receives the values published from
// now on for which filter (if not nil) reports true. Call Close when done.
func (b *Broadcaster[T]) Subscribe(filter func(T) bool) *Subscription[T] {
	s := &Subscription[T]{b: b, c: make(chan T, b.buffer), filter: filter, dropped: make(chan struct{})}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// Publish offers v to every subscriber without blocking. A subscriber
// whose buffer is full is dropped.
func (b *Broadcaster[T]) Publish(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.filter != nil && !s.filter(v) {
			continue
		}
		select {
		case s.c <- v:
		default:
			delete(b.subs, s)
			close(s.dropped)
			b.dropped.Add(1)
		}
	}
}

// Len is the number of current subscribers.
func (b *Broadcaster[T]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// DroppedTotal is the number of subscribers dropped for falling behind
// since the Broadcaster was made.
func (b *Broadcaster[T]) DroppedTotal() uint64 { return b.dropped.Load() }

// C delivers the subscriber's values. It is never closed; watch Dropped.
func (s *Subscription[T]) C() <-chan T { return s.c }

// Dropped is closed when the subscriber was dropped for falling behind.
// Values already buffered in C stay readable.
func (s *Subscription[T]) Dropped() <-chan struct{} { return s.dropped }

// Close unsubscribes. It is safe to call more than once and after a drop.
func (s *Subscription[T]) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
}
