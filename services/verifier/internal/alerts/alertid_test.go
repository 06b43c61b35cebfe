package alerts

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

// Alert ids are deduplicated across restarts: these values were computed
// before the ids moved to libs/alertqueue and must not change.
func TestAlertIDsUnchanged(t *testing.T) {
	run := &verifierv1.VerifyResponse{Table: "orders", SnapshotLsn: "0/1", Findings: []*verifierv1.Finding{
		{Kind: verifierv1.FindingKind_FINDING_KIND_MODIFIED, KeyCommit: []byte{1}, ExpectedDataCommit: []byte{2}, ActualDataCommit: []byte{3}},
	}, Integrity: []*verifierv1.IntegrityProblem{{Witness: "w1", WitnessUrl: "https://w1", Size: 42}}}
	var got []string
	for _, a := range ForRun(run) {
		got = append(got, a.GetAlertId())
	}
	want := []string{"314ea5ae-53ff-8b9d-86bb-bd42c4e03359", "c670afdd-b4fa-85e2-b899-5e4a9d4ca4c3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alert ids (-want +got):\n%s", diff)
	}
}
