package app_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/checkpoint"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/services/verifier/internal/app"
	"github.com/witnz/witnz/services/verifier/internal/config"
	"github.com/witnz/witnz/services/verifier/internal/testcluster"
)

// TestLogIntegrity runs the verifier against a 3-node witness cluster with
// cosigning: a checkpoint policy the cluster does not meet fails the run;
// then a follower's Raft log is altered on disk (as the witness fault
// tests do) and the run fails naming that node, with a CRITICAL alert.
func TestLogIntegrity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, three witnesses and cdc-ingest; skipped with -short")
	}
	c := testcluster.Start(t, testcluster.Options{
		Witnesses: 3,
		Setup: `CREATE TABLE public.audit_log (id bigint PRIMARY KEY, actor text NOT NULL);
			INSERT INTO public.audit_log SELECT g, 'actor ' || g FROM generate_series(1, 300) g;`,
		Protect: []string{"public.audit_log:append-only"},
	})
	start := func(policyFile string) verifierv1connect.VerifierServiceClient {
		svc, err := app.New(t.Context(), config.Config{
			Listen: "127.0.0.1:0", TLS: c.Files(mtls.Service("verifier")), Log: logging.Options{Level: "info", Format: "text"},
			PGDSN: c.DSN, Witnesses: c.WitnessURLs, KeyFile: c.KeyFile, CatchUpTimeout: 30 * time.Second,
			EvidenceDir: t.TempDir(), PolicyFile: policyFile, AlertURL: c.Alerts.URL,
		}, testLogger(t, "verifier"))
		if err != nil {
			t.Fatal(err)
		}
		runUntil(t, svc.Run)
		return verifierv1connect.NewVerifierServiceClient(c.TLS(t, testcluster.Operator).HTTPClient(), "https://"+svc.Addr().String(), rpcserver.ClientOptions()...)
	}
	verify := func(cl verifierv1connect.VerifierServiceClient) *verifierv1.VerifyResponse {
		t.Helper()
		resp, err := cl.Verify(t.Context(), connect.NewRequest(&verifierv1.VerifyRequest{Table: "public.audit_log"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	// A cosigned checkpoint exists before the checks start.
	waitFor(t, "a cosigned checkpoint", func() (bool, string) {
		_, err := c.Witness(t, 0).GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: "public.audit_log"}))
		return err == nil, fmt.Sprint(err)
	})

	v := start(c.PolicyFile)
	if m := verify(v); !m.GetOk() || m.GetOutcome() != verifierv1.Outcome_OUTCOME_OK || len(m.GetIntegrity()) != 0 {
		t.Fatalf("clean run = %v", m)
	}

	t.Run("checkpoint not meeting the policy", func(t *testing.T) {
		_, vkey, err := checkpoint.GenerateKey("witnz.test/elsewhere")
		if err != nil {
			t.Fatal(err)
		}
		foreign := filepath.Join(t.TempDir(), "policy.txt")
		if err := os.WriteFile(foreign, []byte("witness elsewhere "+vkey+"\nquorum 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		m := verify(start(foreign))
		if m.GetOk() || m.GetOutcome() != verifierv1.Outcome_OUTCOME_INTEGRITY || len(m.GetIntegrity()) == 0 {
			t.Fatalf("run with a policy the cluster does not meet = %v", m)
		}
		// Every node that serves the checkpoint serves one that misses it.
		for _, p := range m.GetIntegrity() {
			if p.GetKind() != verifierv1.IntegrityKind_INTEGRITY_KIND_CHECKPOINT_POLICY || p.GetWitness() == "" || p.GetWitnessUrl() == "" {
				t.Errorf("problem %v, want a checkpoint_policy problem naming a witness", p)
			}
		}
		if len(m.GetFindings()) != 0 || m.GetRowsScanned() != 300 {
			t.Errorf("the rows were not compared as usual: %v", m)
		}
		waitAlert(t, c, "verify.log_integrity", "does not satisfy the checkpoint policy")
	})

	t.Run("altered witness state", func(t *testing.T) {
		// A follower, and the data commitment of an entry in the middle of
		// its log.
		f := -1
		for i := range c.WitnessIDs {
			st, err := c.Witness(t, i).GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err == nil && st.Msg.GetState() == "Follower" {
				f = i
				break
			}
		}
		if f < 0 {
			t.Fatal("no follower")
		}
		id := c.WitnessIDs[f]
		stream, err := c.Witness(t, f).GetEntries(t.Context(), connect.NewRequest(&witnessv1.GetEntriesRequest{Table: "public.audit_log", Start: 150, End: 151}))
		if err != nil {
			t.Fatal(err)
		}
		var target []byte
		for stream.Receive() {
			for _, le := range stream.Msg().GetEntries() {
				target = le.GetEntry().GetDataCommit()
			}
		}
		if err := stream.Err(); err != nil || len(target) != 32 {
			t.Fatalf("entry 150: %v (%d bytes)", err, len(target))
		}
		c.StopWitness(t, id)
		raftDB := filepath.Join(c.WitnessDataDir(id), "raft.db")
		b, err := os.ReadFile(raftDB)
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(b, target)
		if n == 0 {
			t.Fatalf("%s does not hold entry 150's data commitment", raftDB)
		}
		altered := bytes.Clone(target)
		altered[31] ^= 1
		if err := os.WriteFile(raftDB, bytes.ReplaceAll(b, target, altered), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("flipped a bit of entry 150's data commitment in %s of %s (%d copies)", filepath.Base(raftDB), id, n)
		c.Exec(t, `INSERT INTO public.audit_log SELECT g, 'actor ' || g FROM generate_series(301, 310) g`)
		c.StartWitness(t, id)
		leaderSize := func() uint64 {
			var size uint64
			for i := range c.WitnessIDs {
				if i != f {
					size = max(size, c.TableInfo(t, i, "public.audit_log").GetSize())
				}
			}
			return size
		}
		waitFor(t, id+" to replay and catch up", func() (bool, string) {
			ti := c.TableInfo(t, f, "public.audit_log")
			want := leaderSize()
			return ti != nil && ti.GetSize() >= want, fmt.Sprintf("%s at %d, want %d", id, ti.GetSize(), want)
		})

		m := verify(v)
		if m.GetOk() || m.GetOutcome() != verifierv1.Outcome_OUTCOME_INTEGRITY || len(m.GetFindings()) != 0 {
			t.Fatalf("run = %v", m)
		}
		var named bool
		for _, p := range m.GetIntegrity() {
			t.Logf("integrity problem: %v", p)
			if p.GetWitness() == id && p.GetWitnessUrl() == c.WitnessURLs[f] && p.GetKind() == verifierv1.IntegrityKind_INTEGRITY_KIND_ROOT_MISMATCH {
				named = true
			} else {
				t.Errorf("problem not about %s: %v", id, p)
			}
		}
		if !named {
			t.Errorf("no root mismatch naming %s", id)
		}
		a := waitAlert(t, c, "verify.log_integrity", "witness "+id+" ("+c.WitnessURLs[f]+")")
		if a.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || a.GetDetail().AsMap()["witness"] != id {
			t.Errorf("alert = %v", a)
		}
	})
}

// waitAlert waits for an alert of type typ whose message contains text.
func waitAlert(t *testing.T, c *testcluster.Cluster, typ, text string) *alertv1.Alert {
	t.Helper()
	var found *alertv1.Alert
	waitFor(t, "a "+typ+" alert saying "+text, func() (bool, string) {
		var seen []string
		for _, a := range c.Alerts.Alerts() {
			if a.GetType() == typ && strings.Contains(a.GetMessage(), text) {
				found = a
				return true, ""
			}
			seen = append(seen, a.GetType()+": "+a.GetMessage())
		}
		return false, strings.Join(seen, "\n")
	})
	return found
}
