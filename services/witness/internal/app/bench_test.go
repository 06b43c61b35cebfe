package app

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
	"github.com/witnz/witnz/services/witness/internal/config"
)

// The benchmarks below run a 3-node cluster in this process with mutual
// TLS on the API and the Raft transport and the node defaults, so that a
// CPU profile (go test -bench Append -cpuprofile) shows one Append end to
// end: client, API, Raft on the leader and on both followers, the FSM.
// WITNZ_RAFT_* variables tune Raft as they tune the witness
// (config.Parse), to compare settings. `make bench` row B11 measures the
// same thing on real processes beside a bare Raft cluster.

// benchCluster is a running in-process cluster and ingest clients of its
// leader: with the shared client options, and without gzip (the client
// does not offer it, so the node answers uncompressed).
type benchCluster struct {
	leader, plain witnessv1connect.WitnessServiceClient
	tables        atomic.Int64
}

func newBenchCluster(b *testing.B) *benchCluster {
	b.Helper()
	dir := b.TempDir()
	ids := []string{"w1", "w2", "w3"}
	identities := []mtls.Identity{mtls.Service("cdc-ingest")}
	for _, id := range ids {
		identities = append(identities, mtls.Witness(id))
	}
	if err := pki.Init(dir, identities, pki.Options{}); err != nil {
		b.Fatal(err)
	}
	api := map[string]string{}
	var peers []string
	raft := map[string]string{}
	for _, id := range ids {
		api[id], raft[id] = testenv.FreeAddr(b), testenv.FreeAddr(b)
		peers = append(peers, fmt.Sprintf("--peer=%s=%s,https://%s", id, raft[id], api[id]))
	}
	log, err := logging.New(io.Discard, "witness", logging.Options{Level: "warn", Format: "text"})
	if err != nil {
		b.Fatal(err)
	}
	for i, id := range ids {
		p := pki.PathsFor(dir, mtls.Witness(id))
		args := append([]string{
			"--node-id=" + id, "--data-dir=" + filepath.Join(dir, id),
			"--listen=" + api[id], "--raft-listen=" + raft[id],
			"--tls-cert=" + p.Cert, "--tls-key=" + p.Key, "--tls-ca=" + p.CA,
		}, peers...)
		if i == 0 {
			args = append(args, "--bootstrap")
		}
		cfg, err := config.Parse(args, os.Getenv)
		if err != nil {
			b.Fatal(err)
		}
		a, err := New(cfg, log)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		b.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("stop %s: %v", id, err)
			}
		})
	}
	p := pki.PathsFor(dir, mtls.Service("cdc-ingest"))
	tc, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		b.Fatal(err)
	}
	hc := tc.HTTPClient()
	b.Cleanup(hc.CloseIdleConnections)
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, id := range ids {
			cl := witnessv1connect.NewWitnessServiceClient(hc, "https://"+api[id], rpcserver.ClientOptions()...)
			st, err := cl.GetStatus(b.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err == nil && st.Msg.GetState() == "Leader" {
				plain := witnessv1connect.NewWitnessServiceClient(hc, "https://"+api[id], append(rpcserver.ClientOptions(), noGzip)...)
				return &benchCluster{leader: cl, plain: plain}
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("no leader within 30 s")
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// benchTable is one table and the position of its next transaction.
type benchTable struct {
	name string
	lsn  uint64
	rng  *rand.ChaCha8
	buf  []*witnessv1.Entry
}

func (c *benchCluster) newTable(b *testing.B) *benchTable {
	b.Helper()
	n := c.tables.Add(1)
	t := &benchTable{name: fmt.Sprintf("bench.t%d", n), rng: rand.NewChaCha8([32]byte{byte(n)})}
	if _, err := c.leader.RegisterTable(b.Context(), connect.NewRequest(&witnessv1.RegisterTableRequest{Table: t.name})); err != nil {
		b.Fatal(err)
	}
	return t
}

// append sends one transaction of n INSERT entries with random
// commitments.
func (c *benchCluster) append(ctx context.Context, t *benchTable, n int) error {
	for len(t.buf) < n {
		t.buf = append(t.buf, &witnessv1.Entry{Op: witnessv1.Op_OP_INSERT, KeyCommit: make([]byte, 32), DataCommit: make([]byte, 32)})
	}
	t.lsn += 0x100
	now := time.Now().UnixMicro()
	es := t.buf[:n]
	for i, e := range es {
		e.CommitLsn, e.TxIndex, e.CommitTimeMicros, e.Xid = t.lsn, uint32(i), now, uint32(t.lsn>>8)
		_, _ = t.rng.Read(e.KeyCommit)
		_, _ = t.rng.Read(e.DataCommit)
	}
	resp, err := c.leader.Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: t.name, Entries: es}))
	if err != nil {
		return err
	}
	if resp.Msg.GetDuplicates() != 0 {
		return fmt.Errorf("%d entries skipped as replays", resp.Msg.GetDuplicates())
	}
	return nil
}

var benchSizes = []int{1, 64, 4096}

// cpuTime is the CPU this process (client and all three nodes) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRates adds hashes/s and the CPU, in microseconds, that one Append
// cost the whole cluster and its client: on a shared machine the CPU per
// Append moves much less than the wall-clock figures.
func reportRates(b *testing.B, n int, cpu0 time.Duration) {
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// noGzip withdraws the client's offer of gzip responses.
var noGzip = connect.WithAcceptCompression("gzip", nil, nil)

// BenchmarkAppend is one Append at a time: its commit latency.
func BenchmarkAppend(b *testing.B) {
	c := newBenchCluster(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("hashes=%d", n), func(b *testing.B) {
			t := c.newTable(b)
			cpu0 := cpuTime()
			for b.Loop() {
				if err := c.append(b.Context(), t, n); err != nil {
					b.Fatal(err)
				}
			}
			reportRates(b, n, cpu0)
		})
	}
}

// BenchmarkAppendParallel is 8 callers at once, each on its own table.
func BenchmarkAppendParallel(b *testing.B) {
	c := newBenchCluster(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("hashes=%d", n), func(b *testing.B) {
			b.SetParallelism(max(8/runtime.GOMAXPROCS(0), 1))
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				t := c.newTable(b)
				for pb.Next() {
					if err := c.append(b.Context(), t, n); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRates(b, n, cpu0)
		})
	}
}

// BenchmarkGetStatus is the status poll of a client following the leader
// (the B1/B2 observers), with 8 tables registered.
func BenchmarkGetStatus(b *testing.B) {
	c := newBenchCluster(b)
	for range 8 {
		t := c.newTable(b)
		if err := c.append(b.Context(), t, 1); err != nil {
			b.Fatal(err)
		}
	}
	for _, v := range []struct {
		name string
		cl   witnessv1connect.WitnessServiceClient
	}{{"gzip", c.leader}, {"identity", c.plain}} {
		b.Run(v.name, func(b *testing.B) {
			cpu0 := cpuTime()
			for b.Loop() {
				if _, err := v.cl.GetStatus(b.Context(), connect.NewRequest(&witnessv1.GetStatusRequest{})); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}
