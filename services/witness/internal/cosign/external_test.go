package cosign

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
)

// externalFixture is the test cluster with a log key and one external
// witness: this package's own add-checkpoint endpoint (TLogWitness, the
// independent implementation a node serves for other logs) behind an
// HTTP server, listing the table's origin with the log key. The policy
// requires two of the nodes and the external witness.
type externalFixture struct {
	tc      *testCluster
	policy  *checkpoint.Policy
	witness ExternalWitness
	server  *httptest.Server
	store   *Store
}

func newExternalFixture(t *testing.T) *externalFixture {
	t.Helper()
	tc := newTestCluster(t)
	skey, vkey, err := checkpoint.GenerateLogKey("witnz/" + cluster)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := checkpoint.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	logVerifier, err := checkpoint.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	extKey := mustKey(t, "witness.example/ext")
	origin, _ := checkpoint.Origin(cluster, table)
	f := &externalFixture{tc: tc, store: mustStore(t, filepath.Join(t.TempDir(), StoreFile))}
	tw := NewTLogWitness([]WitnessLog{{Origin: origin, Verifiers: []note.Verifier{logVerifier}}}, extKey, f.store, quiet)
	f.server = httptest.NewServer(tw)
	t.Cleanup(f.server.Close)
	extVerifier, err := checkpoint.NewCosignatureVerifier(extKey.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	f.witness = ExternalWitness{Name: "ext", URL: f.server.URL, Verifier: extVerifier}

	var text strings.Builder
	fmt.Fprintf(&text, "log %s\n", vkey)
	for _, id := range []string{"w1", "w2", "w3"} {
		fmt.Fprintf(&text, "witness %s %s\n", id, tc.signers[id].cfg.Key.VerifierKey())
	}
	fmt.Fprintf(&text, "witness ext %s\ngroup nodes 2 w1 w2 w3\ngroup both all nodes ext\nquorum both\n", extKey.VerifierKey())
	f.policy, err = checkpoint.ParsePolicy([]byte(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	tc.coord.cfg.Policy, tc.coord.cfg.LogSigner = f.policy, ls
	tc.coord.cfg.External, tc.coord.cfg.HTTP = []ExternalWitness{f.witness}, f.server.Client()
	return f
}

func (f *externalFixture) roundStores(t *testing.T) TableResult {
	t.Helper()
	res := f.tc.round(t)
	if len(res) != 1 || !res[0].Stored || len(res[0].External) != 1 {
		t.Fatalf("round: %+v", res)
	}
	cp, _ := f.tc.leader.r.f.Checkpoint(table)
	_, signers, err := f.policy.Verify(cp.Note)
	if err != nil {
		t.Fatal(err)
	}
	if last := signers[len(signers)-1]; last.Label != "ext" {
		t.Fatalf("stored note's signers %+v: want the external witness last", signers)
	}
	return res[0]
}

func TestExternalWitnessCosigns(t *testing.T) {
	f := newExternalFixture(t)
	f.tc.leader.r.grow(3)
	f.roundStores(t)
	// The next round sends the size the witness cosigned and a proof.
	f.tc.leader.r.grow(4)
	f.roundStores(t)
	origin, _ := checkpoint.Origin(cluster, table)
	if last, ok, _ := f.store.Last(BucketLogs, origin); !ok || last.Size != 7 {
		t.Fatalf("the witness's record: %+v, %v; want size 7", last, ok)
	}
}

// A leader that does not know what the witness cosigned (a new leader, or
// one restarted) sends old size 0; the witness answers 409 with its size
// and the leader resends from there with a consistency proof.
func TestExternalWitnessConflictResync(t *testing.T) {
	f := newExternalFixture(t)
	f.tc.leader.r.grow(5)
	f.roundStores(t)
	f.tc.leader.r.grow(2)
	// Another leader takes over: it starts with no memory of the witness.
	f.tc.coord = NewCoordinator(f.tc.coord.cfg)
	f.roundStores(t)
	origin, _ := checkpoint.Origin(cluster, table)
	if got := f.tc.coord.ext.get("ext", origin); got != 7 {
		t.Fatalf("remembered size %d after the resync, want 7", got)
	}
}

// Without the external cosignature the policy is not met and nothing is
// stored; a witness that is down is logged, not fatal to the round.
func TestExternalWitnessDown(t *testing.T) {
	f := newExternalFixture(t)
	f.server.Close()
	f.tc.leader.r.grow(2)
	res := f.tc.round(t)
	if len(res) != 1 || res[0].Stored || res[0].ExternalErrors["ext"] == nil || !strings.Contains(res[0].Err.Error(), "not stored") {
		t.Fatalf("round: %+v", res)
	}
}
