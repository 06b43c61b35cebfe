package cli

import (
	"strings"
	"testing"
)

// TestFlagHelpOnce: `witnz CMD -h` prints its usage once and succeeds.
func TestFlagHelpOnce(t *testing.T) {
	if _, _, err := run(t, noEnv, "up", "--anchor-interval", "10ms"); err == nil || !strings.Contains(err.Error(), "--anchor-interval") {
		t.Errorf("witnz up --anchor-interval 10ms: %v", err)
	}
	if _, _, err := run(t, noEnv, "up", "--anchor-s3-endpoint", "http://127.0.0.1:9000"); err == nil || !strings.Contains(err.Error(), "--anchor-s3-bucket") {
		t.Errorf("witnz up --anchor-s3-endpoint without a bucket: %v", err)
	}
	for _, args := range [][]string{
		{"status", "-h"}, {"verify", "-h"}, {"anchor", "now", "-h"}, {"anchor", "list", "--help"},
		{"report", "-h"}, {"proof", "verify", "-h"}, {"alerts", "-h"}, {"up", "-h"},
	} {
		out, _, err := run(t, noEnv, args...)
		if err != nil || strings.Count(out, "Usage: witnz ") != 1 {
			t.Errorf("witnz %s: %v, usage printed %d times:\n%s", strings.Join(args, " "), err, strings.Count(out, "Usage: witnz "), out)
		}
	}
}
