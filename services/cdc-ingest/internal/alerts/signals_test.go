package alerts

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

func TestStateID(t *testing.T) {
	id := StateID("witnz", "public.t", TypeTableRenamed, "16384\x00public.x")
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("StateID = %q, not a version 8 UUID", id)
	}
	if again := StateID("witnz", "public.t", TypeTableRenamed, "16384\x00public.x"); again != id {
		t.Errorf("not deterministic")
	}
	for _, other := range []string{
		StateID("other", "public.t", TypeTableRenamed, "16384\x00public.x"),
		StateID("witnz", "public.u", TypeTableRenamed, "16384\x00public.x"),
		StateID("witnz", "public.t", TypeTableDropped, "16384\x00public.x"),
		StateID("witnz", "public.t", TypeTableRenamed, "16384\x00public.y"),
		// Fields cannot run into each other.
		StateID("witnz", "public.t\x00"+TypeTableRenamed, "", "16384\x00public.x"),
	} {
		if other == id {
			t.Errorf("different conditions share the id %q", id)
		}
	}
}

func TestSignalIDs(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	wal := func(commit uint64, idx uint32, lsn uint64) Where {
		return Where{Slot: "witnz", WAL: &WAL{XID: 9, CommitLSN: pglsn(commit), CommitTime: at, LSN: pglsn(lsn), TxIndex: idx}}
	}
	polled := Where{Slot: "witnz", At: at}

	// From the stream: the WAL position.
	a := TruncateAlert(Truncate{Where: wal(0x100, 2, 0x90), Table: "public.t"})
	if a.GetAlertId() != ID("witnz", "public.t", 0x100, 2, TypeTruncate) {
		t.Errorf("stream alert id is not the WAL position's")
	}
	if TruncateAlert(Truncate{Where: wal(0x100, 3, 0x90), Table: "public.t"}).GetAlertId() == a.GetAlertId() {
		t.Errorf("two entries share an alert id")
	}
	if got := a.GetDetail().GetFields(); got["commit_lsn"].GetStringValue() != "0/100" || got["lsn"].GetStringValue() != "0/90" || got["xid"].GetNumberValue() != 9 || got["found_by"].GetStringValue() != "replication stream" {
		t.Errorf("detail = %v", got)
	}
	// A refused control message: its own position, several in one
	// transaction.
	f1 := ForgedControlMessage(Forged{Where: wal(0x100, 0, 0x90), Reason: "x"})
	f2 := ForgedControlMessage(Forged{Where: wal(0x100, 0, 0x98), Reason: "x"})
	if f1.GetAlertId() == f2.GetAlertId() || f1.GetTable() != "" {
		t.Errorf("forged alerts: %v %v", f1, f2)
	}
	// By polling: the state and its episode.
	r := func(w Where, name string) string {
		return TableRenamed(Rename{Where: w, Table: "public.t", OID: 5, NewName: name}).GetAlertId()
	}
	p2 := polled
	p2.At = at.Add(time.Hour)
	if r(polled, "public.x") != r(p2, "public.x") {
		t.Errorf("the same state found later has another id")
	}
	if r(polled, "public.x") == r(polled, "public.y") {
		t.Errorf("different states share an id")
	}
	ep := polled
	ep.Episode = "123"
	if r(polled, "public.x") == r(ep, "public.x") {
		t.Errorf("another episode shares the id")
	}
}

func pglsn(v uint64) pglogrepl.LSN { return pglogrepl.LSN(v) }

func TestSignalSeverities(t *testing.T) {
	w := Where{Slot: "witnz", At: time.Now()}
	ao, mut := witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, witnessv1.TableMode_TABLE_MODE_MUTABLE
	tests := []struct {
		a        *alertv1.Alert
		typ      string
		severity alertv1.Severity
		says     string // the fix or the evidence the message names
	}{
		{TruncateAlert(Truncate{Where: w, Table: "public.t", Mode: ao, Cascade: true}), TypeTruncate, alertv1.Severity_SEVERITY_CRITICAL, "TRUNCATE CASCADE of append-only table public.t"},
		{TruncateAlert(Truncate{Where: w, Table: "public.t", Mode: mut}), TypeTruncate, alertv1.Severity_SEVERITY_HIGH, "authorized"},
		{SchemaChanged(SchemaChange{Where: w, Table: "public.t", New: "id int8", OldCommit: "aa", NewCommit: "bb"}), TypeSchemaChanged, alertv1.Severity_SEVERITY_HIGH, "the previous schema is not known here"},
		{ReplicaIdentityChanged(ReplicaIdentityChange{Where: w, Table: "public.t", Old: "default", New: "nothing", Fix: "run X"}), TypeReplicaIdentityChanged, alertv1.Severity_SEVERITY_HIGH, "run X"},
		{TableRenamed(Rename{Where: w, Table: "public.t", NewName: "public.x"}), TypeTableRenamed, alertv1.Severity_SEVERITY_CRITICAL, "NOT protected"},
		{TableDropped(Dropped{Where: w, Table: "public.t"}), TypeTableDropped, alertv1.Severity_SEVERITY_CRITICAL, "restore it"},
		{PublicationChanged(PublicationChange{Where: w, Publication: "witnz", Change: PublicationTableRemoved, Table: "public.t"}), TypePublicationChanged, alertv1.Severity_SEVERITY_CRITICAL, "ALTER PUBLICATION witnz ADD TABLE public.t"},
		{PublicationChanged(PublicationChange{Where: w, Publication: "Pub", Change: PublicationTableAdded, Table: "public.o"}), TypePublicationChanged, alertv1.Severity_SEVERITY_HIGH, `ALTER PUBLICATION "Pub" DROP TABLE public.o`},
		{PublicationChanged(PublicationChange{Where: w, Publication: "witnz", Change: PublicationDropped}), TypePublicationChanged, alertv1.Severity_SEVERITY_CRITICAL, "restart cdc-ingest"},
		{SlotMissing(SlotState{Where: w}), TypeSlotMissing, alertv1.Severity_SEVERITY_CRITICAL, "slot witnz does not exist"},
		{SlotInvalidated(SlotState{Where: w, WALStatus: "lost"}), TypeSlotInvalidated, alertv1.Severity_SEVERITY_CRITICAL, "pg_drop_replication_slot('witnz')"},
		{SlotLag(Lag{Where: w, LagBytes: 5000, MaxLagBytes: 1000}), TypeSlotLag, alertv1.Severity_SEVERITY_HIGH, "5000 bytes behind the server (threshold 1000)"},
		{HeartbeatMissing(Heartbeat{Where: w, Age: 90 * time.Second, Timeout: time.Minute}), TypeHeartbeatMissing, alertv1.Severity_SEVERITY_HIGH, "for 1m30s (timeout 1m0s"},
		{TableProtected(Protection{Where: w, Table: "public.t", By: "operator/admin"}), TypeTableProtected, alertv1.Severity_SEVERITY_MEDIUM, "operator/admin"},
		{TableUnprotected(Protection{Where: w, Table: "public.t", By: "operator/admin"}), TypeTableUnprotected, alertv1.Severity_SEVERITY_HIGH, "witnz protect public.t"},
		{ChangeAccepted(Accept{Where: w, Table: "public.t", Seq: 4, By: "operator/admin"}), TypeChangeAccepted, alertv1.Severity_SEVERITY_MEDIUM, "seq 4"},
		{ForgedControlMessage(Forged{Where: w, Reason: "bad MAC", Op: "unprotect", Table: "public.t"}), TypeForgedControlMessage, alertv1.Severity_SEVERITY_CRITICAL, `claiming "unprotect" on public.t`},
	}
	for _, tc := range tests {
		if tc.a.GetType() != tc.typ || tc.a.GetSeverity() != tc.severity || tc.a.GetSource() != Source || tc.a.GetAlertId() == "" || tc.a.GetOccurredAt() == nil {
			t.Errorf("%s: %v", tc.typ, tc.a)
		}
		if !strings.Contains(tc.a.GetMessage(), tc.says) {
			t.Errorf("%s: message %q does not say %q", tc.typ, tc.a.GetMessage(), tc.says)
		}
		if tc.a.GetDetail().GetFields()["found_by"].GetStringValue() != "catalog check" {
			t.Errorf("%s: detail %v", tc.typ, tc.a.GetDetail())
		}
	}
}
