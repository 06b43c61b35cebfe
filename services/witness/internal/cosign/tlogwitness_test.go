package cosign

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/tlog"
)

const testOrigin = "example.com/log"

// testLog is an external log: a tree and the log's signing key.
type testLog struct {
	t      *testing.T
	tree   *tlog.Log
	signer note.Signer
	vkey   string
	salt   byte
}

func newTestLog(t *testing.T) *testLog {
	skey, vkey, err := checkpoint.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{t: t, tree: tlog.New(), signer: s, vkey: vkey}
}

func (l *testLog) grow(n int) {
	for range n {
		var h [32]byte
		h[0], h[1], h[2] = byte(l.tree.Size()), byte(l.tree.Size()>>8), l.salt
		if err := l.tree.Append(h); err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *testLog) checkpoint(size uint64) checkpoint.Checkpoint {
	root, err := l.tree.RootAt(size)
	if err != nil {
		l.t.Fatal(err)
	}
	return checkpoint.Checkpoint{Origin: testOrigin, Size: size, Root: root}
}

// request is an add-checkpoint body from old to size, signed by signer.
func (l *testLog) request(old, size uint64, signer note.Signer) string {
	c := l.checkpoint(size)
	sig, err := checkpoint.Sign(c, signer)
	if err != nil {
		l.t.Fatal(err)
	}
	signed, err := checkpoint.Assemble(c, sig)
	if err != nil {
		l.t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "old %d\n", old)
	if old > 0 && old <= size {
		proof, err := l.tree.ConsistencyProof(old, size)
		if err != nil {
			l.t.Fatal(err)
		}
		for _, h := range proof {
			b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
		}
	}
	b.WriteString("\n")
	b.Write(signed)
	return b.String()
}

type reply struct {
	code        int
	body        string
	contentType string
}

func post(t *testing.T, url, body string) reply {
	t.Helper()
	resp, err := http.Post(url+AddCheckpointPath, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header.Get("Content-Type")}
}

func TestAddCheckpoint(t *testing.T) {
	l := newTestLog(t)
	l.grow(10)
	logs, err := ParseWitnessLogs([]byte("# the test log\n" + testOrigin + " " + l.vkey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t, "witnz.test/w1")
	path := filepath.Join(t.TempDir(), StoreFile)
	store := mustStore(t, path)
	w := NewTLogWitness(logs, key, store, quiet)
	w.now = func() time.Time { return time.Unix(1_800_000_000, 0) }
	mux := http.NewServeMux()
	mux.Handle(AddCheckpointPath, w)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cosigned := func(r reply, size uint64) {
		t.Helper()
		if r.code != http.StatusOK {
			t.Fatalf("status %d: %s", r.code, r.body)
		}
		c := l.checkpoint(size)
		text, _ := c.Text()
		v, err := checkpoint.NewCosignatureVerifier(key.VerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		// The client concatenates the answer to the checkpoint (C2SP).
		if _, _, err := checkpoint.Open([]byte(string(text)+"\n"+r.body), note.VerifierList(v)); err != nil {
			t.Fatalf("answer %q is not a valid cosignature: %v", r.body, err)
		}
	}
	conflict := func(r reply, latest uint64) {
		t.Helper()
		if r.code != http.StatusConflict || r.body != fmt.Sprintf("%d\n", latest) || r.contentType != "text/x.tlog.size" {
			t.Fatalf("got %d %q (%s), want 409 with the latest size %d", r.code, r.body, r.contentType, latest)
		}
	}
	status := func(r reply, code int, text string) {
		t.Helper()
		if r.code != code || !strings.Contains(r.body, text) {
			t.Fatalf("got %d %q, want %d containing %q", r.code, r.body, code, text)
		}
	}

	cosigned(post(t, srv.URL, l.request(0, 4, l.signer)), 4)
	// Wrong old size: 409 with the size this witness holds.
	conflict(post(t, srv.URL, l.request(0, 6, l.signer)), 4)
	conflict(post(t, srv.URL, l.request(3, 6, l.signer)), 4)
	// An extension with its consistency proof.
	cosigned(post(t, srv.URL, l.request(4, 7, l.signer)), 7)
	// The same checkpoint again is fine.
	cosigned(post(t, srv.URL, l.request(7, 7, l.signer)), 7)
	// A replayed old checkpoint: the old size cannot exceed its size, and
	// from the latest size the conflict names it.
	status(post(t, srv.URL, l.request(7, 4, l.signer)), http.StatusBadRequest, "old size 7 is above the checkpoint size 4")
	conflict(post(t, srv.URL, l.request(4, 4, l.signer)), 7)
	// A bad consistency proof: 422, nothing recorded.
	bad := strings.Replace(l.request(7, 10, l.signer), "\n", "\n"+base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", 1)
	status(post(t, srv.URL, bad), http.StatusUnprocessableEntity, "does not verify")
	// Same size, another root: 409.
	forked := newTestLog(t)
	forked.signer, forked.salt = l.signer, 1
	forked.grow(8)
	conflict(post(t, srv.URL, strings.Replace(forked.request(0, 7, l.signer), "old 0", "old 7", 1)), 7)
	// Unknown log, unknown key.
	otherKey, _, _ := checkpoint.GenerateLogKey("other.example/log")
	other, _ := checkpoint.NewLogSigner(otherKey)
	status(post(t, srv.URL, l.request(7, 10, other)), http.StatusForbidden, "no valid signature")
	unknown := strings.Replace(l.request(7, 10, l.signer), testOrigin+"\n", "example.com/elsewhere\n", 1)
	status(post(t, srv.URL, unknown), http.StatusNotFound, `unknown log origin "example.com/elsewhere"`)
	// Malformed requests.
	status(post(t, srv.URL, "old 7\n"), http.StatusBadRequest, "no empty line")
	status(post(t, srv.URL, strings.Replace(l.request(7, 10, l.signer), "old 7", "old 07", 1)), http.StatusBadRequest, "leading zeros")
	status(post(t, srv.URL, strings.Replace(l.request(7, 10, l.signer), "old 7", "new 7", 1)), http.StatusBadRequest, `"old <size>"`)
	status(post(t, srv.URL, strings.Replace(l.request(0, 10, l.signer), "old 0\n", "old 0\nAAAA\n", 1)), http.StatusBadRequest, "not the base64 of a 32-byte hash")
	status(post(t, srv.URL, strings.Replace(l.request(0, 10, l.signer), "old 0\n", "old 0\n"+base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", 1)), http.StatusBadRequest, "from size 0 must be empty")
	status(post(t, srv.URL, "old 0\n"+strings.Repeat(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n", 64)+"\n"), http.StatusBadRequest, "64 consistency proof lines, at most 63")
	if resp, err := http.Get(srv.URL + AddCheckpointPath); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %v %v", resp, err)
	}

	// The record survives a restart.
	store.Close()
	w2 := NewTLogWitness(logs, key, mustStore(t, path), quiet)
	if _, err := w2.AddCheckpoint([]byte(l.request(4, 7, l.signer))); err == nil || !strings.Contains(err.Error(), "not 7") {
		t.Fatalf("replay after a restart: %v", err)
	}
	if _, err := w2.AddCheckpoint([]byte(l.request(7, 10, l.signer))); err != nil {
		t.Fatalf("extension after a restart: %v", err)
	}
}

func TestParseWitnessLogs(t *testing.T) {
	_, vkey, _ := checkpoint.GenerateLogKey("a.example/log")
	_, vkey2, _ := checkpoint.GenerateLogKey("a.example/log2")
	logs, err := ParseWitnessLogs([]byte("a.example/log " + vkey + " " + vkey2 + " # two keys\n\nb.example/log " + vkey + "\n"))
	if err != nil || len(logs) != 2 || len(logs[0].Verifiers) != 2 || logs[1].Origin != "b.example/log" {
		t.Fatalf("%+v %v", logs, err)
	}
	_, wkey, _ := checkpoint.GenerateKey("w.example/w1")
	for text, want := range map[string]string{
		"":                        "no log in the file",
		"a.example/log\n":         "line 1: want `<origin> <log verifier key>...`",
		"a.example/log " + wkey:   "log key",
		"a.example/log notakey\n": "line 1: log a.example/log",
	} {
		if _, err := ParseWitnessLogs([]byte(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", text, err, want)
		}
	}
}
