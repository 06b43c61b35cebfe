package capture

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/witnz/witnz/libs/commitment"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/schema"
)

// msg builds pgoutput protocol-1 messages.
type msg []byte

func (m msg) u8(v byte) msg    { return append(m, v) }
func (m msg) u16(v uint16) msg { return binary.BigEndian.AppendUint16(m, v) }
func (m msg) u32(v uint32) msg { return binary.BigEndian.AppendUint32(m, v) }
func (m msg) u64(v uint64) msg { return binary.BigEndian.AppendUint64(m, v) }
func (m msg) str(s string) msg { return append(append(m, s...), 0) }

// col is a tuple column: nil is NULL, toast an unchanged TOASTed value.
type col struct {
	v     []byte
	toast bool
}

func (m msg) tuple(cols ...col) msg {
	m = m.u16(uint16(len(cols)))
	for _, c := range cols {
		switch {
		case c.toast:
			m = m.u8('u')
		case c.v == nil:
			m = m.u8('n')
		default:
			m = m.u8('b').u32(uint32(len(c.v)))
			m = append(m, c.v...)
		}
	}
	return m
}

// pgEpoch is PostgreSQL's timestamp epoch.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func begin(lsn uint64, at time.Time, xid uint32) []byte {
	return msg{'B'}.u64(lsn).u64(uint64(at.Sub(pgEpoch).Microseconds())).u32(xid)
}

func commit(lsn, end uint64, at time.Time) []byte {
	return msg{'C'}.u8(0).u64(lsn).u64(end).u64(uint64(at.Sub(pgEpoch).Microseconds()))
}

const relID = 16384

// relationMsg describes public.t (id int4, body text).
func relationMsg() []byte {
	return msg{'R'}.u32(relID).str("public").str("t").u8('f').u16(2).
		u8(1).str("id").u32(pgtype.Int4OID).u32(0xffffffff).
		u8(0).str("body").u32(pgtype.TextOID).u32(0xffffffff)
}

// relUMsg describes public.u (id int4).
func relUMsg() []byte {
	return msg{'R'}.u32(relID + 1).str("public").str("u").u8('d').u16(1).u8(1).str("id").u32(pgtype.Int4OID).u32(0xffffffff)
}

// schemaCommit is the schema commitment of public.<table> as the Relation
// message rel describes it.
func schemaCommit(table string, rel []byte) commitment.Commitment {
	m, err := pglogrepl.Parse(rel)
	if err != nil {
		panic(err)
	}
	return schema.FromRelation(m.(*pglogrepl.RelationMessage)).Commit(testKey.ForTable("public", table).NewCommitter())
}

func int4(v int32) col  { return col{v: binary.BigEndian.AppendUint32(nil, uint32(v))} }
func text(s string) col { return col{v: []byte(s)} }

type event struct {
	Kind  string
	Table string
	Entry *witnessv1.Entry
	Alert *alertv1.Alert
	LSN   uint64
}

type recordSink struct{ events []event }

func (s *recordSink) BeginTx(lsn uint64) { s.events = append(s.events, event{Kind: "begin", LSN: lsn}) }
func (s *recordSink) Entry(table string, e *witnessv1.Entry) {
	s.events = append(s.events, event{Kind: "entry", Table: table, Entry: e})
}
func (s *recordSink) Alert(a *alertv1.Alert) {
	s.events = append(s.events, event{Kind: "alert", Alert: a})
}
func (s *recordSink) CommitTx(end uint64, _ time.Time) {
	s.events = append(s.events, event{Kind: "commit", LSN: end})
}
func (s *recordSink) Observe(lsn uint64) {
	s.events = append(s.events, event{Kind: "observe", LSN: lsn})
}

var testKey = commitment.Key{1, 2, 3}

func newDecoder(sink Sink, mode witnessv1.TableMode) *Decoder {
	return New(Options{
		Slot: "witnz",
		Key:  testKey,
		Tables: []Table{{Table: pgsource.Table{
			Table: config.Table{Schema: "public", Name: "t", Mode: mode},
			OID:   relID,
		}, SchemaCommit: schemaCommit("t", relationMsg())}},
		KeyColumns: func(context.Context, uint32) ([]string, error) { return []string{"id"}, nil },
		Sink:       sink,
		Log:        slog.New(slog.DiscardHandler),
	})
}

func mustRow(t *testing.T, cols ...col) []byte {
	t.Helper()
	vals := make([][]byte, len(cols))
	for i, c := range cols {
		vals[i] = c.v
	}
	b, err := commitment.AppendRow(nil, vals)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecoder(t *testing.T) {
	sink := &recordSink{}
	d := newDecoder(sink, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const lsn = 0x1000
	stream := [][]byte{
		relationMsg(),
		begin(lsn, at, 7),
		msg{'I'}.u32(relID).u8('N').tuple(int4(1), text("hello")),
		msg{'I'}.u32(relID).u8('N').tuple(int4(2), col{}),
		// REPLICA IDENTITY FULL: the old row fills the unchanged TOAST.
		msg{'U'}.u32(relID).u8('O').tuple(int4(1), text("hello")).u8('N').tuple(int4(1), col{toast: true}),
		msg{'D'}.u32(relID).u8('K').tuple(int4(2), col{}),
		commit(lsn, lsn+0x30, at),
	}
	for i, m := range stream {
		if err := d.Handle(t.Context(), pglogrepl.LSN(0x900+i), m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}

	c := testKey.ForTable("public", "t").NewCommitter()
	k1, k2 := c.KeyCommit(mustRow(t, int4(1))), c.KeyCommit(mustRow(t, int4(2)))
	d1, d2 := c.DataCommit(mustRow(t, int4(1), text("hello"))), c.DataCommit(mustRow(t, int4(2), col{}))
	entry := func(idx uint32, op witnessv1.Op, key, data, old []byte) *witnessv1.Entry {
		return &witnessv1.Entry{CommitLsn: lsn, TxIndex: idx, Op: op, KeyCommit: key, DataCommit: data, OldDataCommit: old, CommitTimeMicros: at.UnixMicro(), Xid: 7}
	}
	want := []event{
		{Kind: "begin", LSN: lsn},
		{Kind: "entry", Table: "public.t", Entry: entry(0, witnessv1.Op_OP_INSERT, k1[:], d1[:], nil)},
		{Kind: "entry", Table: "public.t", Entry: entry(1, witnessv1.Op_OP_INSERT, k2[:], d2[:], nil)},
		{Kind: "entry", Table: "public.t", Entry: entry(2, witnessv1.Op_OP_UPDATE, k1[:], d1[:], d1[:])},
		{Kind: "alert"},
		{Kind: "entry", Table: "public.t", Entry: entry(3, witnessv1.Op_OP_DELETE, k2[:], nil, nil)},
		{Kind: "alert"},
		{Kind: "commit", LSN: lsn + 0x30},
	}
	got := sink.events
	var alerts []*alertv1.Alert
	for i := range got {
		if got[i].Alert != nil {
			alerts = append(alerts, got[i].Alert)
			got[i].Alert = nil
		}
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if len(alerts) != 2 || alerts[0].Message != "UPDATE on append-only table public.t (id=1) in xid 7 at 0/904" ||
		alerts[1].Message != "DELETE on append-only table public.t (id=2) in xid 7 at 0/905" {
		t.Errorf("alerts = %v", alerts)
	}
}

// TestTxIndexPerTable checks that tx_index counts each table's changes in
// a transaction on their own.
func TestTxIndexPerTable(t *testing.T) {
	sink := &recordSink{}
	d := New(Options{
		Key: testKey,
		Tables: []Table{
			{Table: pgsource.Table{Table: config.Table{Schema: "public", Name: "t"}, OID: relID}, SchemaCommit: schemaCommit("t", relationMsg())},
			{Table: pgsource.Table{Table: config.Table{Schema: "public", Name: "u"}, OID: relID + 1}, SchemaCommit: schemaCommit("u", relUMsg())},
		},
		KeyColumns: func(context.Context, uint32) ([]string, error) { return []string{"id"}, nil },
		Sink:       sink,
		Log:        slog.New(slog.DiscardHandler),
	})
	at := time.Now()
	relU := relUMsg()
	ins := func(rel uint32, cols ...col) []byte { return msg{'I'}.u32(rel).u8('N').tuple(cols...) }
	for _, m := range [][]byte{
		relationMsg(), relU,
		begin(0x10, at, 1), ins(relID, int4(1), text("a")), ins(relID+1, int4(1)), ins(relID, int4(2), text("b")), commit(0x10, 0x20, at),
		begin(0x30, at, 2), ins(relID+1, int4(2)), commit(0x30, 0x40, at),
	} {
		if err := d.Handle(t.Context(), 1, m); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, e := range sink.events {
		if e.Entry != nil {
			got = append(got, fmt.Sprintf("%s@%x/%d", e.Table, e.Entry.CommitLsn, e.Entry.TxIndex))
		}
	}
	want := []string{"public.t@10/0", "public.u@10/0", "public.t@10/1", "public.u@30/0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

func TestDecoderMutableRaisesNoAlert(t *testing.T) {
	sink := &recordSink{}
	d := newDecoder(sink, witnessv1.TableMode_TABLE_MODE_MUTABLE)
	at := time.Now()
	for _, m := range [][]byte{
		relationMsg(),
		begin(0x10, at, 1),
		msg{'U'}.u32(relID).u8('N').tuple(int4(1), text("x")),
		msg{'D'}.u32(relID).u8('K').tuple(int4(1), col{}),
		commit(0x10, 0x20, at),
	} {
		if err := d.Handle(t.Context(), 1, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range sink.events {
		if e.Kind == "alert" {
			t.Fatalf("alert on a mutable table: %v", e.Alert)
		}
	}
	if len(sink.events) != 4 {
		t.Fatalf("events = %v", sink.events)
	}
}

func TestDecoderProtocolErrors(t *testing.T) {
	at := time.Now()
	tests := map[string][][]byte{
		"change before relation": {begin(1, at, 1), msg{'I'}.u32(relID).u8('N').tuple(int4(1), text("x"))},
		"change outside tx":      {relationMsg(), msg{'I'}.u32(relID).u8('N').tuple(int4(1), text("x"))},
		"wrong column count":     {relationMsg(), begin(1, at, 1), msg{'I'}.u32(relID).u8('N').tuple(int4(1))},
		"commit mismatch":        {begin(1, at, 1), commit(2, 3, at)},
		"nested begin":           {begin(1, at, 1), begin(2, at, 2)},
		"truncated":              {{'B', 0, 0}},
		"truncated tuple":        {relationMsg(), begin(1, at, 1), {'I', 0, 0, 0x40, 0, 'N', 0, 2, 'b', 0, 0, 0, 9}},
	}
	for name, stream := range tests {
		t.Run(name, func(t *testing.T) {
			d := newDecoder(&recordSink{}, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)
			var err error
			for _, m := range stream {
				if err = d.Handle(t.Context(), 1, m); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestRender(t *testing.T) {
	d := newDecoder(&recordSink{}, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)
	ts := binary.BigEndian.AppendUint64(nil, uint64(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Sub(pgEpoch).Microseconds()))
	long := "a" + strings.Repeat("é", 150) // byte 200 is inside a rune
	tests := []struct {
		oid  uint32
		v    []byte
		want string
	}{
		{pgtype.Int8OID, binary.BigEndian.AppendUint64(nil, 42), "42"},
		{pgtype.TextOID, []byte("héllo"), "héllo"},
		{pgtype.TimestamptzOID, ts, "2026-01-02 03:04:05Z"},
		{pgtype.UUIDOID, []byte{0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x56, 0x78}, "12345678-1234-5678-1234-567812345678"},
		{pgtype.ByteaOID, []byte{0xde, 0xad}, `\xdead`},
		{999999, []byte{1, 2}, `\x0102`},
		{pgtype.TextOID, nil, "NULL"},
		{pgtype.TextOID, []byte(long), long[:199] + "…"},
	}
	for _, tc := range tests {
		if got := d.render(tc.oid, tc.v); got != tc.want {
			t.Errorf("render(%d, %x) = %q, want %q", tc.oid, tc.v, got, tc.want)
		}
	}
}

// FuzzHandle feeds arbitrary messages to a decoder that knows a relation
// and is inside a transaction: it must return errors, never panic.
func FuzzHandle(f *testing.F) {
	at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	f.Add([]byte(msg{'I'}.u32(relID).u8('N').tuple(int4(1), text("x"))))
	f.Add([]byte(msg{'U'}.u32(relID).u8('O').tuple(int4(1), text("x")).u8('N').tuple(int4(1), col{toast: true})))
	f.Add([]byte(msg{'D'}.u32(relID).u8('K').tuple(int4(1), col{})))
	f.Add(relationMsg())
	f.Add(commit(0x10, 0x20, at))
	f.Add([]byte(msg{'T'}.u32(1).u8(0).u32(relID)))
	f.Add([]byte(msg{'M'}.u8(1).u64(0x10).str("witnz").u32(2).u8('{').u8('}')))
	f.Add([]byte(msg{'M'}.u8(0).u64(0x10).str("other").u32(0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(&recordSink{}, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY)
		for _, m := range [][]byte{relationMsg(), begin(0x10, at, 1)} {
			if err := d.Handle(context.Background(), 1, m); err != nil {
				t.Fatal(err)
			}
		}
		_ = d.Handle(context.Background(), 2, data)
	})
}
