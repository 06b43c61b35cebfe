// Package redisconn connects a witnz service to Redis: one client, checked
// with a PING at start-up, with go-redis's own log lines sent to slog.
package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// Dial returns a client for addr once the server answers PING (within 5 s
// or ctx). The error names the address and the fix. go-redis's internal
// logger is process-wide; Dial routes it to log at debug level.
func Dial(ctx context.Context, addr string, log *slog.Logger) (*redis.Client, error) {
	redis.SetLogger(logger{log})
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis at %s unreachable: %v: is redis-server running? check --redis-addr", addr, err)
	}
	return rdb, nil
}

// logger passes go-redis's internal log lines to slog at debug level. The
// errors that matter reach callers through return values.
type logger struct{ log *slog.Logger }

func (l logger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
