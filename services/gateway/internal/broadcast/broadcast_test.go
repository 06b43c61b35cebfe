package broadcast

import (
	"sync"
	"testing"
)

func TestDeliversToEverySubscriberItsFilterAccepts(t *testing.T) {
	b := New[int](4)
	all := b.Subscribe(nil)
	even := b.Subscribe(func(v int) bool { return v%2 == 0 })
	for v := range 4 {
		b.Publish(v)
	}
	for _, tc := range []struct {
		name string
		s    *Subscription[int]
		want []int
	}{
		{"all", all, []int{0, 1, 2, 3}},
		{"even", even, []int{0, 2}},
	} {
		for _, w := range tc.want {
			if got := <-tc.s.C(); got != w {
				t.Errorf("%s: got %d, want %d", tc.name, got, w)
			}
		}
		if len(tc.s.C()) != 0 {
			t.Errorf("%s: %d values too many", tc.name, len(tc.s.C()))
		}
	}
}

func TestSlowSubscriberDroppedOthersUnaffected(t *testing.T) {
	b := New[int](2)
	slow := b.Subscribe(nil)
	fast := b.Subscribe(nil)
	var got []int
	for v := range 5 {
		b.Publish(v) // never blocks, although slow reads nothing
		got = append(got, <-fast.C())
	}
	select {
	case <-slow.Dropped():
	default:
		t.Fatal("slow subscriber not dropped")
	}
	if len(got) != 5 {
		t.Errorf("fast subscriber got %v", got)
	}
	if b.Len() != 1 || b.DroppedTotal() != 1 {
		t.Errorf("Len = %d, DroppedTotal = %d; want 1, 1", b.Len(), b.DroppedTotal())
	}
	if len(slow.C()) != 2 {
		t.Errorf("slow subscriber kept %d buffered values, want 2", len(slow.C()))
	}
	slow.Close() // after a drop: harmless
	fast.Close()
	fast.Close()
	if b.Len() != 0 {
		t.Errorf("Len after Close = %d", b.Len())
	}
}

func TestConcurrentUse(t *testing.T) {
	b := New[int](16)
	var subs sync.WaitGroup
	for range 4 {
		subs.Go(func() {
			s := b.Subscribe(nil)
			defer s.Close()
			for range 100 {
				select {
				case <-s.C():
				case <-s.Dropped():
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		subs.Wait()
		close(done)
	}()
	for v := 0; ; v++ {
		select {
		case <-done:
			if b.Len() != 0 {
				t.Errorf("Len = %d after every subscriber closed", b.Len())
			}
			return
		default:
			b.Publish(v)
		}
	}
}
