package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/witnz/witnz/libs/commitment"
)

var (
	key   = commitment.Key{1, 2, 3}
	other = commitment.Key{4, 5, 6}
	c64   = strings.Repeat("ab", 32)
)

func mustSeal(t *testing.T, k commitment.Key, m Message) []byte {
	t.Helper()
	p, err := Seal(k, m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSealOpen(t *testing.T) {
	before := time.Now()
	in := Message{Op: OpAccept, Table: "public.audit", Slot: "witnz", Seq: 42, Key: c64, Data: c64, By: "operator/admin", Reason: "ticket 7 <ok> & done"}
	p := mustSeal(t, key, in)
	got, err := Open(key, p)
	if err != nil {
		t.Fatal(err)
	}
	if got.V != 1 || len(got.Nonce) != 32 || got.MAC == "" || got.Issued().Before(before.Truncate(time.Microsecond)) {
		t.Errorf("Seal did not fill V, Nonce, IssuedAt, MAC: %+v", got)
	}
	in.V, in.Nonce, in.IssuedAt, in.MAC = got.V, got.Nonce, got.IssuedAt, got.MAC
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-sealed +opened):\n%s", diff)
	}
	if again := mustSeal(t, key, Message{Op: OpHeartbeat, Slot: "witnz"}); bytes.Equal(again, p) {
		t.Error("two seals are equal")
	}
	if c, err := Commitment(got.Key); err != nil || c == nil || c[0] != 0xab {
		t.Errorf("Commitment(key) = %v, %v", c, err)
	}
	if c, err := Commitment(""); err != nil || c != nil {
		t.Errorf("Commitment(\"\") = %v, %v", c, err)
	}
}

// edit returns p with its JSON changed by f, keeping the MAC.
func edit(t *testing.T, p []byte, f func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOpenRejects(t *testing.T) {
	good := mustSeal(t, key, Message{Op: OpUnprotect, Table: "public.audit", Slot: "witnz", By: "operator/admin"})
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"other key", mustSeal(t, other, Message{Op: OpUnprotect, Table: "public.audit", Slot: "witnz"}), ErrForged},
		{"forged mac", edit(t, good, func(m map[string]any) { m["mac"] = strings.Repeat("00", 32) }), ErrForged},
		{"changed table", edit(t, good, func(m map[string]any) { m["table"] = "public.other" }), ErrForged},
		{"changed slot", edit(t, good, func(m map[string]any) { m["slot"] = "evil" }), ErrForged},
		{"changed time", edit(t, good, func(m map[string]any) { m["issued_at_us"] = m["issued_at_us"].(float64) + 1 }), ErrForged},
		{"added field", edit(t, good, func(m map[string]any) { m["reason"] = "because" }), ErrForged},
		{"no mac", edit(t, good, func(m map[string]any) { delete(m, "mac") }), ErrMalformed},
		{"short mac", edit(t, good, func(m map[string]any) { m["mac"] = "abcd" }), ErrMalformed},
		{"unknown field", edit(t, good, func(m map[string]any) { m["admin"] = true }), ErrMalformed},
		{"wrong version", edit(t, good, func(m map[string]any) { m["v"] = 2 }), ErrMalformed},
		{"unknown op", edit(t, good, func(m map[string]any) { m["op"] = "drop" }), ErrMalformed},
		{"no slot", edit(t, good, func(m map[string]any) { delete(m, "slot") }), ErrMalformed},
		{"bad nonce", edit(t, good, func(m map[string]any) { m["nonce"] = "xyz" }), ErrMalformed},
		{"no table", edit(t, good, func(m map[string]any) { m["table"] = "audit" }), ErrMalformed},
		{"unprotect with key", edit(t, good, func(m map[string]any) { m["key"] = c64 }), ErrMalformed},
		{"truncated", good[:len(good)-10], ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), `{}`...), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"not json", []byte("witnz"), ErrMalformed},
		{"oversized", append(append([]byte{}, good...), bytes.Repeat([]byte(" "), MaxSize)...), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(key, tc.payload)
			if !errors.Is(err, tc.want) {
				t.Errorf("Open = %v, want %v", err, tc.want)
			}
		})
	}
	for name, m := range map[string]Message{
		"accept without key":  {Op: OpAccept, Table: "public.t", Slot: "s"},
		"accept bad data":     {Op: OpAccept, Table: "public.t", Slot: "s", Key: c64, Data: "00"},
		"accept bad old_data": {Op: OpAccept, Table: "public.t", Slot: "s", Key: c64, OldData: c64 + "00"},
		"no slot":             {Op: OpHeartbeat},
		"oversized":           {Op: OpHeartbeat, Slot: "s", Reason: strings.Repeat("x", MaxSize)},
	} {
		if _, err := Seal(key, m); !errors.Is(err, ErrMalformed) {
			t.Errorf("Seal(%s) = %v, want ErrMalformed", name, err)
		}
	}
}

func TestReplayGuard(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	msg := func(nonce byte, issued time.Time) Message {
		return Message{Nonce: strings.Repeat(string("0123456789abcdef"[nonce%16]), 32), IssuedAt: issued.UnixMicro()}
	}
	g := newReplayGuard(10*time.Minute, 3)
	a := msg(1, now)
	if err := g.Check(a, 100, now); err != nil {
		t.Fatal(err)
	}
	if err := g.Check(a, 100, now.Add(time.Minute)); err != nil {
		t.Errorf("same message at the same position (stream replay): %v", err)
	}
	if err := g.Check(a, 200, now.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Errorf("same nonce at another position: %v, want ErrReplayed", err)
	}
	if err := g.Check(msg(2, now.Add(-11*time.Minute)), 300, now); !errors.Is(err, ErrStale) {
		t.Errorf("old message: %v, want ErrStale", err)
	}
	if err := g.Check(msg(3, now.Add(11*time.Minute)), 300, now); !errors.Is(err, ErrStale) {
		t.Errorf("message from the future: %v, want ErrStale", err)
	}
	// A backlog read long after: the commit time, not the clock, counts.
	if err := g.Check(msg(4, now.Add(-time.Hour)), 400, now.Add(-time.Hour+time.Second)); err != nil {
		t.Errorf("old message checked at its commit time: %v", err)
	}

	// Bounded: the oldest nonce is forgotten first.
	for i := byte(5); i < 9; i++ {
		if err := g.Check(msg(i, now), 500+uint64(i), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.Len(); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
	// Expiry: well past the window everything is forgotten.
	if err := g.Check(msg(9, now.Add(30*time.Minute)), 900, now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := g.Len(); n != 1 {
		t.Errorf("Len after expiry = %d, want 1", n)
	}
}

// TestReplayAfterRestart: a restarted cdc-ingest has forgotten the nonces
// of the messages its earlier run issued; a copy of one written after this
// run started is still refused, because this run did not seal it, while a
// message of the earlier run read from the slot at its original place, and
// this run's own messages, pass.
func TestReplayAfterRestart(t *testing.T) {
	earlier := NewReplayGuard()
	payload, err := earlier.Seal(key, Message{Op: OpUnprotect, Table: "public.t", Slot: "witnz", By: "operator/admin", Reason: "migration"})
	if err != nil {
		t.Fatal(err)
	}
	genuine, err := Open(key, payload)
	if err != nil {
		t.Fatal(err)
	}
	const start = 0x5000 // the server's WAL position when the new run started
	g := NewReplayGuard()
	g.Since(start)
	now := time.Now()
	if err := g.Check(genuine, start-0x100, now); err != nil {
		t.Errorf("the earlier run's message at its original position (before this run started): %v", err)
	}
	if err := g.Check(genuine, start+0x100, now); !errors.Is(err, ErrReplayed) || !strings.Contains(err.Error(), "not issued by it") {
		t.Errorf("the same message written again after the restart: %v, want ErrReplayed naming it", err)
	}
	// Messages are placed by the end of their record: one that ends
	// exactly at the start position was written before this run started
	// (a heartbeat of the process that held the slot before).
	lastPayload, err := earlier.Seal(key, Message{Op: OpHeartbeat, Slot: "witnz"})
	if err != nil {
		t.Fatal(err)
	}
	last, err := Open(key, lastPayload)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(last, start, now); err != nil {
		t.Errorf("the earlier run's message ending at the start position: %v", err)
	}
	if err := g.Check(genuine, start+1, now); !errors.Is(err, ErrReplayed) || !strings.Contains(err.Error(), "not issued by it") {
		t.Errorf("written just after the start position: %v, want ErrReplayed naming it", err)
	}
	ownPayload, err := g.Seal(key, Message{Op: OpHeartbeat, Slot: "witnz"})
	if err != nil {
		t.Fatal(err)
	}
	own, err := Open(key, ownPayload)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Check(own, start+0x200, now); err != nil {
		t.Errorf("this run's own message: %v", err)
	}
	// Without Since (a decoder used on its own) nothing changes.
	if err := NewReplayGuard().Check(genuine, start+0x100, now); err != nil {
		t.Errorf("guard without a start position: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(mustSealF(f, Message{Op: OpHeartbeat, Slot: "witnz"}))
	f.Add(mustSealF(f, Message{Op: OpAccept, Table: "public.t", Slot: "witnz", Key: c64}))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := Open(key, p)
		if err != nil {
			return
		}
		// Whatever opens must be a well-formed message.
		if err := m.check(); err != nil {
			t.Fatalf("opened a message that fails check: %v", err)
		}
	})
}

func mustSealF(f *testing.F, m Message) []byte {
	p, err := Seal(key, m)
	if err != nil {
		f.Fatal(err)
	}
	return p
}
