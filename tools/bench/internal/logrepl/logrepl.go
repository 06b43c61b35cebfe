// Package logrepl is a bare pgoutput consumer: the baseline for what the
// witnz pipeline adds on top of PostgreSQL's own logical decoding. It
// decodes messages and counts rows, and does nothing else.
package logrepl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Setup creates publication pub for table and the logical slot (pgoutput)
// in the database of dsn.
func Setup(ctx context.Context, dsn, table, pub, slot string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgx.Identifier{pub}.Sanitize(), table)); err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return fmt.Errorf("create slot %s: %w", slot, err)
	}
	return nil
}

// Drop removes the slot and the publication Setup made.
func Drop(ctx context.Context, dsn, pub, slot string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// The walsender may still be going away: retry briefly.
	var lastErr error
	for range 50 {
		_, lastErr = conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot)
		if lastErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lastErr != nil {
		return fmt.Errorf("drop slot %s: %w", slot, lastErr)
	}
	_, err = conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{pub}.Sanitize())
	return err
}

// Commit is one decoded transaction as the consumer saw it.
type Commit struct {
	// CommitTime is PostgreSQL's commit timestamp.
	CommitTime time.Time
	// Received is when the COMMIT message reached the consumer.
	Received time.Time
	// Rows is the number of INSERT, UPDATE and DELETE messages.
	Rows int
	LSN  pglogrepl.LSN
}

// Consume streams slot (pgoutput protocol 1, binary, publication pub, as
// cdc-ingest asks for it) and calls onCommit for every transaction until
// ctx ends, which is not an error. It confirms what it received about once
// a second, and whenever the server asks.
func Consume(ctx context.Context, dsn, slot, pub string, onCommit func(Commit)) error {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	conn, err := pgconn.Connect(ctx, dsn+sep+"replication=database")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + pub + "'", "binary 'true'"},
	})
	if err != nil {
		return fmt.Errorf("start replication on %s: %w", slot, err)
	}
	// Receive without a context: a context per message costs a goroutine
	// hand-off in pgconn, which a bare consumer must not pay. Cancellation
	// closes the socket instead.
	stop := context.AfterFunc(ctx, func() { _ = conn.Conn().Close() })
	defer stop()
	var (
		received pglogrepl.LSN
		rows     int
		next     = time.Now().Add(time.Second)
	)
	status := func() error {
		next = time.Now().Add(time.Second)
		return pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: received})
	}
	for {
		raw, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			return done(ctx, err)
		}
		msg, ok := raw.(*pgproto3.CopyData)
		if !ok {
			if e, ok := raw.(*pgproto3.ErrorResponse); ok {
				return fmt.Errorf("replication stream: %s", e.Message)
			}
			continue
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return err
			}
			if ka.ServerWALEnd > received {
				received = ka.ServerWALEnd
			}
			if ka.ReplyRequested {
				if err := status(); err != nil {
					return done(ctx, err)
				}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return err
			}
			m, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return fmt.Errorf("decode pgoutput: %w", err)
			}
			switch m := m.(type) {
			case *pglogrepl.BeginMessage:
				rows = 0
			case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
				rows++
			case *pglogrepl.CommitMessage:
				onCommit(Commit{CommitTime: m.CommitTime, Received: time.Now(), Rows: rows, LSN: m.CommitLSN})
				received = m.TransactionEndLSN
				if time.Now().After(next) {
					if err := status(); err != nil {
						return done(ctx, err)
					}
				}
			}
		}
	}
}

func done(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
