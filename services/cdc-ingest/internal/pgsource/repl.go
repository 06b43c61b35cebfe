package pgsource

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/witnz/witnz/libs/pgsetup"
)

// Repl is a logical replication connection (replication=database).
type Repl struct {
	conn *pgconn.PgConn
}

// ConnectReplication opens a replication connection to the database of dsn.
func ConnectReplication(ctx context.Context, dsn string) (*Repl, error) {
	conn, err := pgsetup.ConnectReplication(ctx, dsn)
	if err != nil {
		return nil, err
	}
	return &Repl{conn: conn}, nil
}

// Close closes the connection.
func (r *Repl) Close(ctx context.Context) error { return r.conn.Close(ctx) }

// Start starts streaming pgoutput (protocol 1, binary values, with logical
// decoding messages) from the slot. start 0 means the slot's confirmed
// flush position.
func (r *Repl) Start(ctx context.Context, slot, publication string, start pglogrepl.LSN) error {
	err := pglogrepl.StartReplication(ctx, r.conn, slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names " + pgsetup.QuoteLiteral(pgsetup.QuoteIdent(publication)),
			"binary 'true'",
			"messages 'true'",
		},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return fmt.Errorf("replication slot %s is in use by another process (%s): only one cdc-ingest may stream a slot; stop the other one, or give this one its own slot and publication (--slot, --publication, then witnz init and witnz protect); this process retries meanwhile and writes no heartbeats", slot, pgErr.Message)
		}
		return fmt.Errorf("start replication from slot %s: %w", slot, pgsetup.ErrLine(err))
	}
	return nil
}

// Message is one message of the replication stream: either WAL data or a
// keepalive.
type Message struct {
	// XLogData is set for WAL data.
	XLogData *pglogrepl.XLogData
	// Keepalive is set for a primary keepalive.
	Keepalive *pglogrepl.PrimaryKeepaliveMessage
}

// ErrTimeout is returned by Receive when its context's deadline passed
// before a message arrived; the connection stays usable.
var ErrTimeout = errors.New("no replication message before the deadline")

// Receive reads the next message. When ctx's deadline passes first it
// returns ErrTimeout.
func (r *Repl) Receive(ctx context.Context) (Message, error) {
	raw, err := r.conn.ReceiveMessage(ctx)
	if err != nil {
		if pgconn.Timeout(err) && ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
			return Message{}, ErrTimeout
		}
		return Message{}, err
	}
	switch msg := raw.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return Message{}, errors.New("empty CopyData message in the replication stream")
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return Message{}, fmt.Errorf("parse keepalive: %w", err)
			}
			return Message{Keepalive: &ka}, nil
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return Message{}, fmt.Errorf("parse XLogData: %w", err)
			}
			// pgproto3 reuses its read buffer; the decoder keeps no
			// reference to WALData beyond the next Receive.
			return Message{XLogData: &xld}, nil
		}
		return Message{}, fmt.Errorf("unknown replication message %q", msg.Data[0])
	case *pgproto3.ErrorResponse:
		return Message{}, fmt.Errorf("replication stream: %w", pgsetup.ErrLine(pgconn.ErrorResponseToPgError(msg)))
	case *pgproto3.CopyDone:
		return Message{}, errors.New("PostgreSQL ended the replication stream")
	}
	return Message{}, fmt.Errorf("unexpected replication message %T", raw)
}

// SendStatus tells PostgreSQL that everything before lsn is durable: the
// slot's confirmed flush position moves to lsn.
func (r *Repl) SendStatus(lsn pglogrepl.LSN) error {
	return pglogrepl.SendStandbyStatusUpdate(context.Background(), r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ClientTime:       time.Now(),
	})
}
