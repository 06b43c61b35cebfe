package testenv

import (
	"fmt"
	"net/http"
	"testing"
)

func TestMinIO(t *testing.T) {
	m := MinIO(t)
	if m.AccessKey() == "" || len(m.SecretKey()) < 8 {
		t.Fatalf("credentials %q/%q", m.AccessKey(), m.SecretKey())
	}
	resp, err := http.Get(m.Endpoint() + "/minio/health/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("live = %s", resp.Status)
	}
	// An unsigned request is refused: the server enforces the generated
	// credentials.
	resp, err = http.Get(m.Endpoint() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("anonymous ListBuckets = %s, want 403", resp.Status)
	}
}

func TestMinIOMissingBinary(t *testing.T) {
	t.Setenv("WITNZ_MINIO", "/nonexistent/minio")
	t.Setenv("CI", "")
	ft := &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		MinIO(ft)
	}()
	if !ft.skipped || ft.failed {
		t.Fatalf("without CI a missing binary must skip (skipped %v, failed %v): %s", ft.skipped, ft.failed, ft.msg)
	}
	t.Setenv("CI", "true")
	ft = &fakeT{TB: t}
	func() {
		defer func() { _ = recover() }()
		MinIO(ft)
	}()
	if !ft.failed || ft.skipped {
		t.Fatalf("with CI a missing binary must fail (skipped %v, failed %v): %s", ft.skipped, ft.failed, ft.msg)
	}
}

// fakeT records how MinIO ends the test; Skipf and Fatalf panic to stop
// the call as the real ones stop the goroutine.
type fakeT struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	panic("skip")
}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	panic("fatal")
}
