package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/commitment"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/statedigest"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/libs/tlog"
	"github.com/witnz/witnz/services/witness/internal/config"
	"github.com/witnz/witnz/services/witness/internal/raftnet"
)

const table = "public.audit_log"

// buckets is the protected table's state-digest bucket count.
const buckets = 64

// secret is a value only the protected rows contain. The witness must never
// see it, nor any plain hash of it.
const secret = "WITNZ-SECRET-VALUE-123"

// syncWriter forwards logs to the test until the cluster is torn down;
// Raft goroutines may still log a moment after the test ends.
type syncWriter struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed && testing.Verbose() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

type testNode struct {
	id      string
	cfg     config.Config
	app     *App
	cancel  context.CancelFunc
	done    chan error
	running bool
}

type cluster struct {
	t      *testing.T
	pkiDir string
	nodes  []*testNode
	logs   *syncWriter
	ingest *http.Client
}

func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an event
	}
}

func tlsFiles(dir string, id mtls.Identity) []string {
	p := pki.PathsFor(dir, id)
	return []string{"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA}
}

func mustTLS(t *testing.T, dir string, id mtls.Identity) *mtls.Config {
	t.Helper()
	p := pki.PathsFor(dir, id)
	c, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, pkiDir: t.TempDir(), logs: &syncWriter{t: t}}
	t.Cleanup(func() {
		c.logs.mu.Lock()
		c.logs.closed = true
		c.logs.mu.Unlock()
	})
	ids := []string{"w1", "w2", "w3"}
	identities := []mtls.Identity{mtls.Service("cdc-ingest"), mtls.Service("gateway")}
	for _, id := range ids {
		identities = append(identities, mtls.Witness(id))
	}
	if err := pki.Init(c.pkiDir, identities, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	type addrs struct{ raft, api string }
	a := map[string]addrs{}
	var peerArgs []string
	for _, id := range ids {
		a[id] = addrs{testenv.FreeAddr(t), testenv.FreeAddr(t)}
		peerArgs = append(peerArgs, fmt.Sprintf("--peer=%s=%s,https://%s", id, a[id].raft, a[id].api))
	}
	for i, id := range ids {
		args := append([]string{
			"--node-id=" + id,
			"--data-dir=" + filepath.Join(t.TempDir(), id),
			"--listen=" + a[id].api,
			"--raft-listen=" + a[id].raft,
			"--log-level=debug",
		}, tlsFiles(c.pkiDir, mtls.Witness(id))...)
		args = append(args, peerArgs...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		cfg, err := config.Parse(args, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		// Shortish timeouts and frequent snapshots: elections settle fast
		// and every test runs through Persist, Restore and InstallSnapshot.
		// The timeouts leave room for a loaded 2-core machine running -race,
		// where 300 ms lost leaders spuriously.
		cfg.Raft = config.RaftTuning{
			HeartbeatTimeout:   800 * time.Millisecond,
			ElectionTimeout:    800 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond,
			SnapshotInterval:   100 * time.Millisecond,
			SnapshotThreshold:  4,
			TrailingLogs:       2,
		}
		c.nodes = append(c.nodes, &testNode{id: id, cfg: cfg})
	}
	c.ingest = mustTLS(t, c.pkiDir, mtls.Service("cdc-ingest")).HTTPClient()
	for _, n := range c.nodes {
		c.start(n)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
		}
	})
	return c
}

func (c *cluster) start(n *testNode) {
	c.t.Helper()
	log, err := logging.New(c.logs, "witness", logging.Options{Level: "debug", Format: "text"})
	if err != nil {
		c.t.Fatal(err)
	}
	a, err := New(n.cfg, log.With("node", n.id))
	if err != nil {
		c.t.Fatalf("start %s: %v", n.id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.app, n.cancel, n.done, n.running = a, cancel, make(chan error, 1), true
	go func() { n.done <- a.Run(ctx) }()
}

func (c *cluster) stop(n *testNode) {
	c.t.Helper()
	if !n.running {
		return
	}
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			c.t.Errorf("stop %s: %v", n.id, err)
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s did not stop within 30s", n.id)
	}
	n.running = false
}

// crash stops a node's Raft the hard way: no leadership transfer.
func (c *cluster) crash(n *testNode) {
	c.t.Helper()
	if err := n.app.node.Raft().Shutdown().Error(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) client(n *testNode, hc *http.Client, opts ...connect.ClientOption) witnessv1connect.WitnessServiceClient {
	return witnessv1connect.NewWitnessServiceClient(hc, "https://"+n.cfg.Listen, append(rpcserver.ClientOptions(), opts...)...)
}

func (c *cluster) ingestClient(n *testNode) witnessv1connect.WitnessServiceClient {
	return c.client(n, c.ingest)
}

func (c *cluster) status(n *testNode) (*witnessv1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.ingestClient(n).GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// leader polls until one running node leads and every running node that
// takes part agrees on it.
func (c *cluster) leader(exclude ...*testNode) *testNode {
	c.t.Helper()
	var leader *testNode
	pollUntil(c.t, 20*time.Second, "a leader every node agrees on", func() error {
		leader = nil
		ids := map[string]bool{}
	nodes:
		for _, n := range c.nodes {
			for _, x := range exclude {
				if x == n {
					continue nodes
				}
			}
			if !n.running {
				continue
			}
			st, err := c.status(n)
			if err != nil {
				return err
			}
			ids[st.LeaderId] = true
			if st.State == "Leader" {
				leader = n
			}
		}
		if leader == nil || len(ids) != 1 || !ids[leader.id] {
			return fmt.Errorf("leader %v, nodes name %v", leader, ids)
		}
		return nil
	})
	return leader
}

// sameLog polls until every listed node holds table at size with root.
func (c *cluster) sameLog(size uint64, root []byte, nodes ...*testNode) {
	c.t.Helper()
	pollUntil(c.t, 20*time.Second, fmt.Sprintf("size %d on every node", size), func() error {
		for _, n := range nodes {
			st, err := c.status(n)
			if err != nil {
				return err
			}
			var info *witnessv1.TableInfo
			for _, ti := range st.Tables {
				if ti.Name == table {
					info = ti
				}
			}
			if info == nil {
				return fmt.Errorf("%s has no table %s", n.id, table)
			}
			if info.Size != size || !bytes.Equal(info.Root, root) {
				return fmt.Errorf("%s has size %d root %x; want %d %x", n.id, info.Size, info.Root, size, root)
			}
		}
		return nil
	})
}

func (c *cluster) running() []*testNode {
	var out []*testNode
	for _, n := range c.nodes {
		if n.running {
			out = append(out, n)
		}
	}
	return out
}

// rows builds the commitments of rows that carry the secret value, the way
// cdc-ingest does: only 32-byte keyed commitments leave it.
type rowSource struct {
	committer *commitment.Committer
	rowEncs   [][]byte
	keyEncs   [][]byte
	lsn       uint64
}

func newRowSource(t *testing.T) *rowSource {
	key, err := commitment.ParseKey([]byte(strings.Repeat("5a", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return &rowSource{committer: key.ForTable("public", "audit_log").NewCommitter(), lsn: 0x1A2B3C}
}

// batch returns n INSERT entries of one transaction.
func (r *rowSource) batch(t *testing.T, n int) []*witnessv1.Entry {
	t.Helper()
	r.lsn += 0x100
	out := make([]*witnessv1.Entry, n)
	for i := range out {
		id := binary.BigEndian.AppendUint64(nil, uint64(len(r.rowEncs)+1))
		keyEnc, err := commitment.AppendRow(nil, [][]byte{id})
		if err != nil {
			t.Fatal(err)
		}
		rowEnc, err := commitment.AppendRow(nil, [][]byte{id, []byte(secret), []byte(fmt.Sprintf("%s-%d", secret, i))})
		if err != nil {
			t.Fatal(err)
		}
		r.keyEncs, r.rowEncs = append(r.keyEncs, keyEnc), append(r.rowEncs, rowEnc)
		k, d := r.committer.KeyCommit(keyEnc), r.committer.DataCommit(rowEnc)
		out[i] = &witnessv1.Entry{
			CommitLsn: r.lsn, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT,
			KeyCommit: k[:], DataCommit: d[:],
			CommitTimeMicros: 1_760_000_000_000_000 + int64(r.lsn), Xid: uint32(r.lsn >> 8),
		}
	}
	return out
}

// expected is the log a correct witness holds for the entries appended, in
// order, computed here independently of the FSM.
type expected struct {
	log     *tlog.Log
	entries []*witnessv1.Entry
}

func (e *expected) add(t *testing.T, es []*witnessv1.Entry) {
	t.Helper()
	for _, x := range es {
		var kc, dc commitment.Commitment
		copy(kc[:], x.KeyCommit)
		copy(dc[:], x.DataCommit)
		ce := commitment.Entry{Seq: e.log.Size(), CommitLSN: x.CommitLsn, TxIndex: x.TxIndex, Op: commitment.Op(x.Op),
			CommitTimeMicros: x.CommitTimeMicros, XID: x.Xid, KeyCommit: &kc, DataCommit: &dc}
		if err := e.log.Append(ce.LeafHash()); err != nil {
			t.Fatal(err)
		}
		e.entries = append(e.entries, x)
	}
}

// digest is the state digest of the first n entries appended, built
// directly from them (all INSERTs).
func (e *expected) digest(t *testing.T, n uint64) [32]byte {
	t.Helper()
	d, err := statedigest.New(buckets)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range e.entries[:n] {
		var kc, dc commitment.Commitment
		copy(kc[:], x.KeyCommit)
		copy(dc[:], x.DataCommit)
		d.Add(kc, dc)
	}
	return d.Root()
}

func (e *expected) root() []byte {
	r := e.log.Root()
	return r[:]
}

func appendBatch(t *testing.T, cl witnessv1connect.WitnessServiceClient, es []*witnessv1.Entry) *witnessv1.AppendResponse {
	t.Helper()
	resp, err := cl.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: es}))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return resp.Msg
}

func TestCluster(t *testing.T) {
	c := newCluster(t)
	rows := newRowSource(t)
	want := &expected{log: tlog.New()}
	leader := c.leader()

	t.Run("register table", func(t *testing.T) {
		cl := c.ingestClient(leader)
		// Fewer buckets than the default keep snapshots, and so this test,
		// small; the FSM tests cover the default.
		req := &witnessv1.RegisterTableRequest{Table: table, Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY, Buckets: buckets}
		resp, err := cl.RegisterTable(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Msg.Created || resp.Msg.Table.Buckets != buckets {
			t.Fatalf("RegisterTable = %v, want created with %d buckets", resp.Msg, buckets)
		}
		resp, err = cl.RegisterTable(t.Context(), connect.NewRequest(req))
		if err != nil || resp.Msg.Created {
			t.Fatalf("second RegisterTable = %v, %v; want not created", resp, err)
		}
		_, err = cl.RegisterTable(t.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: table, Mode: witnessv1.TableMode_TABLE_MODE_MUTABLE, Buckets: buckets}))
		if connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("RegisterTable with another mode: %v, want AlreadyExists", err)
		}
	})

	t.Run("append 1000 entries replicates to every node", func(t *testing.T) {
		cl := c.ingestClient(leader)
		var last *witnessv1.AppendResponse
		for range 10 {
			es := rows.batch(t, 100)
			want.add(t, es)
			last = appendBatch(t, cl, es)
		}
		if last.Size != 1000 || !bytes.Equal(last.Root, want.root()) || last.Duplicates != 0 || last.RaftIndex == 0 {
			t.Fatalf("last Append = size %d root %x dup %d index %d; want size 1000 root %x", last.Size, last.Root, last.Duplicates, last.RaftIndex, want.root())
		}
		c.sameLog(1000, want.root(), c.nodes...)
	})

	t.Run("status", func(t *testing.T) {
		for _, n := range c.nodes {
			// Over the Connect protocol here; every other call uses gRPC.
			resp, err := witnessv1connect.NewWitnessServiceClient(c.ingest, "https://"+n.cfg.Listen).GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			st := resp.Msg
			if st.NodeId != n.id || st.LeaderId != leader.id || st.LeaderApiAddress != "https://"+leader.cfg.Listen || len(st.Members) != 3 || st.Term == 0 || st.AppliedIndex == 0 {
				t.Fatalf("%s status = %v", n.id, st)
			}
			for _, m := range st.Members {
				if !m.Voter || m.Leader != (m.Id == leader.id) || m.ApiAddress == "" || m.RaftAddress == "" {
					t.Fatalf("%s reports member %v", n.id, m)
				}
			}
			ti := st.Tables[0]
			ch := want.log.ChainHead()
			if ti.Name != table || ti.Mode != witnessv1.TableMode_TABLE_MODE_APPEND_ONLY || !bytes.Equal(ti.ChainHead, ch[:]) || ti.LastCommitLsn != rows.lsn {
				t.Fatalf("%s table = %v", n.id, ti)
			}
		}
	})

	followers := func() []*testNode {
		var out []*testNode
		for _, n := range c.running() {
			if n != leader {
				out = append(out, n)
			}
		}
		return out
	}

	t.Run("append on a follower names the leader", func(t *testing.T) {
		f := followers()[0]
		_, err := c.ingestClient(f).Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: rows.batch(t, 1)}))
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
			t.Fatalf("Append on follower: %v, want FailedPrecondition", err)
		}
		api := "https://" + leader.cfg.Listen
		if want := fmt.Sprintf("not the leader; leader is %s at %s", leader.id, api); cerr.Message() != want {
			t.Fatalf("message %q, want %q", cerr.Message(), want)
		}
		if got := cerr.Meta().Get("witnz-leader"); got != api {
			t.Fatalf("witnz-leader header = %q, want %q", got, api)
		}
	})

	t.Run("append needs the ingest identity", func(t *testing.T) {
		gw := c.client(leader, mustTLS(t, c.pkiDir, mtls.Service("gateway")).HTTPClient())
		_, err := gw.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: rows.batch(t, 1)}))
		if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "spiffe://witnz/service/cdc-ingest") || !strings.Contains(err.Error(), "spiffe://witnz/service/gateway") {
			t.Fatalf("Append as gateway: %v, want PermissionDenied naming both identities", err)
		}
		_, err = gw.RegisterTable(t.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: "public.x"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("RegisterTable as gateway: %v, want PermissionDenied", err)
		}
		// Reads are open to any witnz identity.
		if _, err := gw.GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{})); err != nil {
			t.Fatalf("GetStatus as gateway: %v", err)
		}
	})

	t.Run("clients without a certificate are refused", func(t *testing.T) {
		pool := mustTLS(t, c.pkiDir, mtls.Service("gateway")).Client().RootCAs
		noCert := &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: noCert, ForceAttemptHTTP2: true}}
		if _, err := c.client(leader, hc).GetStatus(t.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{})); err == nil {
			t.Fatal("GetStatus without a client certificate succeeded")
		}
		// Underneath, the handshake is refused: the alert arrives on the
		// first read (TLS 1.3 judges the client certificate last).
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", leader.cfg.Listen, noCert)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Fatalf("TLS without a client certificate: %v, want certificate required", err)
		}
	})

	t.Run("raft port refuses a service certificate", func(t *testing.T) {
		cfg := mustTLS(t, c.pkiDir, mtls.Service("gateway")).Client()
		cfg.NextProtos = []string{raftnet.ALPN}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", leader.cfg.RaftListen, cfg)
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("raft connection as gateway: %v, want bad certificate", err)
		}
	})

	t.Run("replaying an applied batch only counts duplicates", func(t *testing.T) {
		resp := appendBatch(t, c.ingestClient(leader), want.entries[900:1000])
		if resp.Duplicates != 100 || resp.Size != 1000 || !bytes.Equal(resp.Root, want.root()) {
			t.Fatalf("replay = %v, want 100 duplicates at size 1000", resp)
		}
	})

	t.Run("bad batches are refused before raft", func(t *testing.T) {
		cl := c.ingestClient(leader)
		es := rows.batch(t, 2)
		es[1].KeyCommit = es[1].KeyCommit[:16]
		_, err := cl.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: es}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "key_commit of 16 bytes") {
			t.Fatalf("short key_commit: %v", err)
		}
		big := make([]*witnessv1.Entry, 10001)
		for i := range big {
			big[i] = &witnessv1.Entry{CommitLsn: 1, TxIndex: uint32(i), Op: witnessv1.Op_OP_INSERT}
		}
		_, err = cl.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: table, Entries: big}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "at most 10000") {
			t.Fatalf("oversized batch: %v", err)
		}
		_, err = cl.Append(t.Context(), connect.NewRequest(&witnessv1.AppendRequest{Table: "public.unknown", Entries: big[:1]}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("unregistered table: %v, want NotFound", err)
		}
		if rej, _ := leader.app.node.FSM().Rejections(); len(rej) != 0 {
			t.Fatalf("pre-checked batches reached the FSM: %v", rej)
		}
	})

	t.Run("reads from a follower", func(t *testing.T) {
		f := c.client(followers()[0], c.ingest)
		stream, err := f.GetEntries(t.Context(), connect.NewRequest(&witnessv1.GetEntriesRequest{Table: table, Start: 10}))
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(10)
		var chunks []int
		for stream.Receive() {
			chunks = append(chunks, len(stream.Msg().Entries))
			for _, le := range stream.Msg().Entries {
				if le.Seq != seq {
					t.Fatalf("got seq %d, want %d", le.Seq, seq)
				}
				if h := sha256.Sum256(append([]byte{0}, le.Encoded...)); !bytes.Equal(le.LeafHash, h[:]) {
					t.Fatalf("entry %d: leaf hash is not SHA-256(0x00 || encoded)", seq)
				}
				sent := want.entries[seq]
				if !bytes.Equal(le.Entry.KeyCommit, sent.KeyCommit) || !bytes.Equal(le.Entry.DataCommit, sent.DataCommit) || le.Entry.CommitLsn != sent.CommitLsn || le.Entry.TxIndex != sent.TxIndex {
					t.Fatalf("entry %d = %v, sent %v", seq, le.Entry, sent)
				}
				seq++
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if seq != 1000 || len(chunks) != 1 || chunks[0] != 990 {
			t.Fatalf("streamed up to %d in chunks %v, want 990 entries", seq, chunks)
		}

		incl, err := f.GetInclusionProof(t.Context(), connect.NewRequest(&witnessv1.GetInclusionProofRequest{Table: table, Index: 123}))
		if err != nil {
			t.Fatal(err)
		}
		p := incl.Msg
		if p.Size != 1000 || !bytes.Equal(p.Root, want.root()) {
			t.Fatalf("inclusion proof at size %d root %x", p.Size, p.Root)
		}
		if err := tlog.VerifyInclusion(123, 1000, p.LeafHash, p.Proof, want.root()); err != nil {
			t.Fatal(err)
		}
		cons, err := f.GetConsistencyProof(t.Context(), connect.NewRequest(&witnessv1.GetConsistencyProofRequest{Table: table, FromSize: 500}))
		if err != nil {
			t.Fatal(err)
		}
		root500, _ := want.log.RootAt(500)
		if !bytes.Equal(cons.Msg.FromRoot, root500[:]) {
			t.Fatalf("from_root %x, want %x", cons.Msg.FromRoot, root500)
		}
		if err := tlog.VerifyConsistency(500, 1000, cons.Msg.Proof, root500[:], want.root()); err != nil {
			t.Fatal(err)
		}
		_, err = f.GetInclusionProof(t.Context(), connect.NewRequest(&witnessv1.GetInclusionProofRequest{Table: table, Index: 5, Size: 5000}))
		if connect.CodeOf(err) != connect.CodeOutOfRange {
			t.Fatalf("proof beyond the log: %v, want OutOfRange", err)
		}
		_, err = f.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: table}))
		// Nodes without cosigner keys make no checkpoints (cosign_test.go
		// runs a cluster that does).
		if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "no cosigned checkpoint of public.audit_log yet") {
			t.Fatalf("GetCheckpoint: %v", err)
		}
		_, err = f.GetStateDigest(t.Context(), connect.NewRequest(&witnessv1.GetStateDigestRequest{Table: table, AsOfSize: 5000}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("GetStateDigest beyond the log: %v, want InvalidArgument", err)
		}
		// As of an earlier size: the digest of the first 500 entries.
		sd, err := f.GetStateDigest(t.Context(), connect.NewRequest(&witnessv1.GetStateDigestRequest{Table: table, AsOfSize: 500}))
		if err != nil {
			t.Fatal(err)
		}
		if w := want.digest(t, 500); sd.Msg.Size != 500 || !bytes.Equal(sd.Msg.Root, w[:]) || len(sd.Msg.Buckets) != buckets {
			t.Fatalf("digest as of 500: size %d root %x, %d buckets; want root %x", sd.Msg.Size, sd.Msg.Root, len(sd.Msg.Buckets), w)
		}
	})

	t.Run("entries stream in chunks of at most 1000", func(t *testing.T) {
		es := rows.batch(t, 600)
		want.add(t, es)
		appendBatch(t, c.ingestClient(leader), es)
		c.sameLog(1600, want.root(), c.nodes...)
		stream, err := c.ingestClient(followers()[1]).GetEntries(t.Context(), connect.NewRequest(&witnessv1.GetEntriesRequest{Table: table}))
		if err != nil {
			t.Fatal(err)
		}
		var chunks []int
		for stream.Receive() {
			chunks = append(chunks, len(stream.Msg().Entries))
		}
		if err := stream.Err(); err != nil || len(chunks) != 2 || chunks[0] != 1000 || chunks[1] != 600 {
			t.Fatalf("chunks %v, %v; want [1000 600]", chunks, err)
		}
	})

	t.Run("a crashed leader is replaced and appends continue", func(t *testing.T) {
		old := leader
		c.crash(old)
		leader = c.leader(old)
		if leader == old {
			t.Fatal("the crashed node still leads")
		}
		es := rows.batch(t, 200)
		want.add(t, es)
		if resp := appendBatch(t, c.ingestClient(leader), es); resp.Size != 1800 {
			t.Fatalf("size after failover = %d, want 1800", resp.Size)
		}
		// The crashed node restarts from its data directory (with
		// --bootstrap still set for w1: existing state wins) and catches up.
		c.stop(old)
		c.start(old)
		c.sameLog(1800, want.root(), c.nodes...)
		c.leader()
	})

	t.Run("a follower restarted after log compaction catches up from a snapshot", func(t *testing.T) {
		f := followers()[0]
		c.stop(f)
		stoppedAt := leader.app.node.Raft().AppliedIndex()
		cl := c.ingestClient(leader)
		for range 8 {
			es := rows.batch(t, 50)
			want.add(t, es)
			appendBatch(t, cl, es)
		}
		// Wait until the leader's snapshot (and so its log compaction)
		// has passed everything the stopped follower holds.
		r := leader.app.node.Raft()
		pollUntil(t, 10*time.Second, "leader snapshots past the stopped follower", func() error {
			snap, _ := strconv.ParseUint(r.Stats()["last_snapshot_index"], 10, 64)
			if snap < stoppedAt+4 {
				return fmt.Errorf("last snapshot at %d, follower stopped at %d", snap, stoppedAt)
			}
			return nil
		})
		c.start(f)
		c.sameLog(2200, want.root(), c.nodes...)
	})

	t.Run("every node serves the same state digest", func(t *testing.T) {
		w := want.digest(t, uint64(len(want.entries)))
		for _, n := range c.running() {
			resp, err := c.client(n, c.ingest).GetStateDigest(t.Context(), connect.NewRequest(&witnessv1.GetStateDigestRequest{Table: table}))
			if err != nil {
				t.Fatalf("%s: %v", n.id, err)
			}
			var rows uint64
			for i, b := range resp.Msg.Buckets {
				if b.Bucket != uint32(i) || len(b.Lthash) != 2048 {
					t.Fatalf("%s: bucket %d = %d with %d-byte lthash", n.id, i, b.Bucket, len(b.Lthash))
				}
				rows += b.Count
			}
			if resp.Msg.Size != 2200 || rows != 2200 || !bytes.Equal(resp.Msg.Root, w[:]) {
				t.Fatalf("%s: digest at size %d with %d rows root %x; want 2200 rows root %x", n.id, resp.Msg.Size, rows, resp.Msg.Root, w)
			}
		}
	})

	t.Run("data directories hold no row data", func(t *testing.T) {
		// Stop everything so every byte is on disk, then read it all.
		for _, n := range c.nodes {
			c.stop(n)
		}
		needles := map[string][]byte{
			"secret value":            []byte(secret),
			"SHA-256 of secret value": sum(secret),
		}
		for i := 0; i < len(rows.rowEncs); i += 97 {
			needles[fmt.Sprintf("row %d encoding", i)] = rows.rowEncs[i]
			needles[fmt.Sprintf("SHA-256 of row %d", i)] = sum(string(rows.rowEncs[i]))
			needles[fmt.Sprintf("SHA-256 of row %d value", i)] = sum(fmt.Sprintf("%s-%d", secret, i%100))
		}
		files, snapshots := 0, 0
		for _, n := range c.nodes {
			// The commitments themselves are there (in the Raft log or a
			// snapshot): the scan reads the right bytes.
			sawCommitment := false
			err := filepath.WalkDir(n.cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				files++
				if strings.HasSuffix(path, "state.bin") {
					snapshots++
				}
				for name, needle := range needles {
					if bytes.Contains(b, needle) {
						t.Errorf("%s contains the %s", path, name)
					}
				}
				sawCommitment = sawCommitment || bytes.Contains(b, want.entries[len(want.entries)-1].DataCommit)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !sawCommitment {
				t.Errorf("no file of %s holds the last data commitment; is the scan reading the right files?", n.id)
			}
		}
		if files < 6 || snapshots < 3 {
			t.Fatalf("scanned %d files with %d snapshots; want the raft.db and snapshots of every node", files, snapshots)
		}
	})
}

func sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
