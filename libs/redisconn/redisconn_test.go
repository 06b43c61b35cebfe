package redisconn_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/witnz/witnz/libs/redisconn"
	"github.com/witnz/witnz/libs/testenv"
)

func TestDial(t *testing.T) {
	srv := testenv.Redis(t)
	rdb, err := redisconn.Dial(t.Context(), srv.Addr(), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestDialUnreachableNamesAddressAndFix(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = redisconn.Dial(t.Context(), addr, slog.Default())
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "check --redis-addr") {
		t.Fatalf("Dial(%s) = %v, want an error naming the address and --redis-addr", addr, err)
	}
}
