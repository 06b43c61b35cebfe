package alerts

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
)

// Alert ids are deduplicated across restarts: these values were computed
// before the ids moved to libs/alertqueue and must not change.
func TestAlertIDsUnchanged(t *testing.T) {
	if got, want := Alert(TypeLate, alertv1.Severity_SEVERITY_HIGH, "orders", "m", nil, "x", "y").GetAlertId(), "0dfb3f61-5ddc-822b-a814-66c9e8659978"; got != want {
		t.Errorf("id = %s, want %s", got, want)
	}
	if got, want := Alert(TypeFailed, alertv1.Severity_SEVERITY_HIGH, "", "m", nil).GetAlertId(), "2a3e33cb-3d85-8130-bca7-618e1c237c60"; got != want {
		t.Errorf("id = %s, want %s", got, want)
	}
}

// A nil Alerter (no alert service configured) still logs what it is given.
func TestNilAlerterLogs(t *testing.T) {
	var buf bytes.Buffer
	var a *Alerter
	al := Alert(TypeFailed, alertv1.Severity_SEVERITY_HIGH, "", "m", nil)
	a.Raise(slog.New(slog.NewTextHandler(&buf, nil)), al)
	if !strings.Contains(buf.String(), "alert_id="+al.GetAlertId()) {
		t.Errorf("log = %q, want the alert id", buf.String())
	}
	if err := a.Run(t.Context()); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
