package anchorcheck

import (
	"errors"
	"testing"
	"time"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
)

// Alert ids are deduplicated across restarts: these values were computed
// before the ids moved to libs/alertqueue and must not change.
func TestAlertIDsUnchanged(t *testing.T) {
	now := time.Unix(1700000000, 0)
	ch := &anchorv1.AnchorCheck{Table: "orders", Receipt: &anchorv1.Receipt{Sink: "s3", Bucket: "b", Key: "k", VersionId: "v", ChecksumSha256: "c"}}
	if got, want := CheckFailed(ch, now).GetAlertId(), "1f1b1bb3-c997-8aa6-b23b-a7a9f051d42d"; got != want {
		t.Errorf("CheckFailed id = %s, want %s", got, want)
	}
	if got, want := Unavailable("https://a:1", now.Add(-time.Hour), now, errors.New("x")).GetAlertId(), "3a8b063d-3be3-8d12-b916-1756d5589be1"; got != want {
		t.Errorf("Unavailable id = %s, want %s", got, want)
	}
}
