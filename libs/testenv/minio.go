package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// MinIOVersion is the MinIO release scripts/minio.sh builds; the binary is
// cached as ${WITNZ_CACHE:-$HOME/.cache/witnz}/minio-<MinIOVersion>.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

const minioMissingFix = "run scripts/minio.sh (or `make deps`) to build it once, about 2.5 minutes"

// MinIOServer is a throwaway MinIO server owned by one test: an
// S3-compatible store with Object Lock, on 127.0.0.1, with its data in a
// temporary directory and generated root credentials.
type MinIOServer struct {
	endpoint  string
	accessKey string
	secretKey string
}

// MinIOBinary returns the path of the MinIO server binary: $WITNZ_MINIO if
// set, else the one scripts/minio.sh caches.
func MinIOBinary() string {
	if p := os.Getenv("WITNZ_MINIO"); p != "" {
		return p
	}
	cache := os.Getenv("WITNZ_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "witnz")
	}
	return filepath.Join(cache, "minio-"+MinIOVersion)
}

// MinIO starts a MinIO server on a free 127.0.0.1 port and waits until it
// is ready. The test's cleanup kills it and waits for it to exit. When the
// binary is missing the test is skipped, unless CI is set: then it fails.
func MinIO(t testing.TB) *MinIOServer {
	t.Helper()
	bin := MinIOBinary()
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		if os.Getenv("CI") != "" {
			t.Fatalf("testenv: MinIO server binary %s is missing (CI is set, so this fails rather than skips); %s", bin, minioMissingFix)
		}
		t.Skipf("testenv: MinIO server binary %s is missing; %s", bin, minioMissingFix)
	}
	dir := t.TempDir()
	srv := &MinIOServer{accessKey: "witnz-" + randomHex(t, 6), secretKey: randomHex(t, 20)}
	var errs []error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testenv: find a free port for MinIO: %v", err)
		}
		endpoint, portTaken, err := startMinIO(t, bin, dir, port, srv)
		if err == nil {
			srv.endpoint = endpoint
			return srv
		}
		if !portTaken {
			t.Fatalf("testenv: start MinIO: %v", err)
		}
		errs = append(errs, err)
	}
	t.Fatalf("testenv: start MinIO: every port tried was taken by another process:\n%v", errors.Join(errs...))
	return nil
}

// Endpoint is the server's base URL, "http://127.0.0.1:PORT".
func (m *MinIOServer) Endpoint() string { return m.endpoint }

// AccessKey is the root user (an S3 access key id).
func (m *MinIOServer) AccessKey() string { return m.accessKey }

// SecretKey is the root password (an S3 secret access key).
func (m *MinIOServer) SecretKey() string { return m.secretKey }

// Region is the region the server answers for.
func (m *MinIOServer) Region() string { return "us-east-1" }

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func startMinIO(t testing.TB, bin, dir string, port int, srv *MinIOServer) (endpoint string, portTaken bool, err error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	endpoint = "http://" + addr
	data := filepath.Join(dir, fmt.Sprintf("data-%d", port))
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", false, err
	}
	out := new(syncBuffer)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, data)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+srv.accessKey,
		"MINIO_ROOT_PASSWORD="+srv.secretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_REGION=us-east-1",
		// The server's own config and certificates stay in the test's
		// directory, not in $HOME/.minio.
		"HOME="+dir,
	)
	client := &http.Client{Timeout: 2 * time.Second}
	portTaken, err = runServer(t, "minio", port, cmd, out, 60*time.Second, 20*time.Millisecond, func() error { return minioReady(client, endpoint) })
	if err != nil {
		return "", portTaken, err
	}
	return endpoint, false, nil
}

// minioReady asks the cluster health endpoint, which answers 200 once the
// server can serve reads and writes. Our process being alive while the
// port answers like MinIO is what ties the answer to it: had another
// process held the port, ours would have exited on the bind.
func minioReady(client *http.Client, endpoint string) error {
	resp, err := client.Get(endpoint + "/minio/health/cluster")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/minio/health/cluster answered %s", endpoint, resp.Status)
	}
	return nil
}
