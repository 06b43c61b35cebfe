package pgsetup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConnectTimeout bounds every connection attempt.
const ConnectTimeout = 10 * time.Second

// Open connects a small pool to the database of dsn and checks that the
// server answers. Errors name the server and the fix.
func Open(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %v", err)
	}
	cfg.MaxConns = maxConns
	// pgconn's ConnectTimeout field bounds nothing once parsed (only a
	// connect_timeout in the DSN shapes the dialer): bound the dial here,
	// and every connection's start-up by the caller's context.
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.DialFunc = (&net.Dialer{Timeout: ConnectTimeout, KeepAlive: 5 * time.Minute}).DialContext
	}
	addr := Addr(cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, ConnectError(addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := pool.Ping(cctx); err != nil {
		pool.Close()
		return nil, ConnectError(addr, err)
	}
	return pool, nil
}

// Addr renders host and port for messages.
func Addr(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// ConnectError turns a connection failure into one line naming the server
// and the fix.
func ConnectError(addr string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("PostgreSQL at %s refused the connection: %s (SQLSTATE %s): check the user, password and database in --pg-dsn", addr, pgErr.Message, pgErr.Code)
	}
	cause := err
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		cause = opErr.Err
	}
	return fmt.Errorf("cannot reach PostgreSQL at %s: %s: is PostgreSQL running? check --pg-dsn", addr, OneLine(cause.Error()))
}

// OneLine folds whitespace runs, newlines included, into single spaces.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// ErrLine renders a PostgreSQL error as its message and SQLSTATE.
func ErrLine(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	return err
}

// QuoteTable quotes schema.table as an SQL identifier.
func QuoteTable(schema, table string) string {
	return pgx.Identifier{schema, table}.Sanitize()
}

// QuoteIdent quotes one SQL identifier.
func QuoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// QuoteLiteral quotes s as an SQL string literal.
func QuoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// ConnectReplication opens a logical replication connection
// (replication=database) to the database of dsn. Binary send functions of
// text types convert to the client encoding, so it is pinned to UTF8, as
// scans pin it.
func ConnectReplication(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %v", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["client_encoding"] = "UTF8"
	// The context bounds the whole connection start-up: pgconn's
	// ConnectTimeout field does not (a server that accepts the TCP
	// connection and never answers the start-up message would hold the
	// stream forever).
	ctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", ConnectError(Addr(cfg.Host, cfg.Port), err))
	}
	return conn, nil
}
