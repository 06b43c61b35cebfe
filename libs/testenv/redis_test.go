package testenv_test

import (
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/witnz/witnz/libs/testenv"
)

func TestRedis(t *testing.T) {
	t.Parallel()
	srv := testenv.Redis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { client.Close() })
	ctx := t.Context()

	if got, err := client.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v; want PONG", got, err)
	}
	if got, err := client.ConfigGet(ctx, "save").Result(); err != nil || got["save"] != "" {
		t.Errorf("CONFIG GET save = %v, %v; want persistence off", got, err)
	}

	sub := client.Subscribe(ctx, "events")
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	n, err := client.Publish(ctx, "events", "hello").Result()
	if err != nil || n != 1 {
		t.Fatalf("PUBLISH = %d, %v; want 1 receiver", n, err)
	}
	select {
	case msg := <-sub.Channel():
		if msg.Channel != "events" || msg.Payload != "hello" {
			t.Errorf("got message %q on %q, want hello on events", msg.Payload, msg.Channel)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s of PUBLISH")
	}
}

func TestRedisCleanup(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("inner", func(t *testing.T) {
		addr = testenv.Redis(t).Addr()
	})
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still answers after the test", addr)
	}
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 20 {
		p := testenv.FreePort(t)
		if seen[p] {
			t.Fatalf("FreePort returned %d twice", p)
		}
		seen[p] = true
	}
	addr := testenv.FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on FreeAddr %s: %v", addr, err)
	}
	l.Close()
}
