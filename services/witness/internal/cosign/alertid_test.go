package cosign

import (
	"testing"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// Alert ids are deduplicated across restarts: these values were computed
// before the ids moved to libs/alertqueue and must not change.
func TestAlertIDsUnchanged(t *testing.T) {
	if got, want := RejectionAlert("c1", &witnessv1.Rejection{Table: "orders", RaftIndex: 77}).GetAlertId(), "02cdf347-74d9-8c9b-a335-f3b3faeef8d2"; got != want {
		t.Errorf("RejectionAlert id = %s, want %s", got, want)
	}
	r := &witnessv1.CosignRefusal{Table: "orders", NodeId: "n1", Size: 9, Root: []byte{1, 2, 3}, Kind: witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE}
	if got, want := RefusalAlert("c1", r).GetAlertId(), "5907314a-edde-8a8b-8cb6-76dab0a7d0d1"; got != want {
		t.Errorf("RefusalAlert id = %s, want %s", got, want)
	}
}
