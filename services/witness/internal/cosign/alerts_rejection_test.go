package cosign

import (
	"testing"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

func TestRejectionAlert(t *testing.T) {
	r := &witnessv1.Rejection{RaftIndex: 42, Table: "public.t", Reason: "out of order", AtMicros: 1}
	a := RejectionAlert("c1", r)
	if a.GetType() != TypeCommandRejected || a.GetSeverity() != alertv1.Severity_SEVERITY_HIGH || a.GetTable() != "public.t" {
		t.Fatalf("alert %v", a)
	}
	// Every node derives the same id for the same rejection, and another
	// rejection gets another id.
	if b := RejectionAlert("c1", r); b.GetAlertId() != a.GetAlertId() {
		t.Errorf("ids differ: %s %s", a.GetAlertId(), b.GetAlertId())
	}
	if c := RejectionAlert("c1", &witnessv1.Rejection{RaftIndex: 43, Table: "public.t"}); c.GetAlertId() == a.GetAlertId() {
		t.Error("two rejections share an id")
	}
}
