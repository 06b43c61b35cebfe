// Package store keeps the alert service's state in its own PostgreSQL
// database: alerts, the hosts that run an agent, their tripwire rules and the
// events agents stream. The schema is created and upgraded by versioned
// migrations embedded in the binary (see Migrate).
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Errors the store reports.
var (
	// ErrSchemaTooNew means the database was migrated by a newer binary.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrHostNotFound means no host with that name has registered.
	ErrHostNotFound = errors.New("host not registered")
)

// Store is the alert service's database.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database named by dsn and checks that it answers.
// Its errors name the server address and how to fix the problem.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("--pg-dsn is not a valid PostgreSQL connection string: %w", err)
	}
	addr := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	db := cfg.ConnConfig.Database
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgresql at %s: %w", addr, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch pgErr.Code {
			case "3D000": // invalid_catalog_name
				return nil, fmt.Errorf("postgresql at %s has no database %q: create it (CREATE DATABASE %s) or fix --pg-dsn", addr, db, db)
			case "28000", "28P01": // invalid_authorization_specification, invalid_password
				return nil, fmt.Errorf("postgresql at %s refused user %q: %s (fix the user or password in --pg-dsn)", addr, cfg.ConnConfig.User, pgErr.Message)
			}
		}
		return nil, fmt.Errorf("postgresql at %s unreachable: %s (is PostgreSQL running? check --pg-dsn)", addr, oneLine(err))
	}
	return &Store{pool: pool}, nil
}

// oneLine folds pgconn's multi-line connect errors (one line per address
// tried) into one line, dropping repeats.
func oneLine(err error) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !seen[l] {
			seen[l] = true
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// Pool is the connection pool, for migrations and tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }
