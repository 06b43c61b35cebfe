package rows

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/tools/bench/internal/bareraft"
	"github.com/witnz/witnz/tools/bench/internal/closedloop"
	"github.com/witnz/witnz/tools/bench/internal/cpuuse"
	"github.com/witnz/witnz/tools/bench/internal/report"
	"github.com/witnz/witnz/tools/bench/internal/stats"
	"github.com/witnz/witnz/tools/bench/internal/witnessproc"
)

const (
	// b11Callers append at once in the throughput runs, each to its own
	// table (so that no caller's batch lands behind another's and counts
	// as a replay), each one Append after another.
	b11Callers = 8
	// b11CallTimeout bounds one Append.
	b11CallTimeout = 30 * time.Second
)

// b11Sizes are the hashes per Append, hence per Raft entry.
var b11Sizes = []int{1, 64, 4096}

var (
	b11Witnesses = []string{"w1", "w2", "w3"}
	b11Bare      = []string{"r1", "r2", "r3"}
)

// b11Side is what one cluster did at one batch size.
type b11Side struct {
	load, one       closedloop.Result
	cpuLoad, cpuOne cpuuse.Usage
}

type b11Size struct {
	size, payload     int
	witness, bare     b11Side
	loadFrom, oneFrom time.Time // ends of the warm-ups, witness side
}

// b11 is witness append throughput and commit latency beside a bare Raft
// cluster.
type b11 struct {
	sizes      []b11Size
	duplicates atomic.Int64
	leader     string
}

// appender writes one table's entries: every Append is one transaction at
// a new commit LSN, its entries at tx_index 0, 1, …, with fresh random
// 32-byte key and data commitments (the witness sees nothing else).
type appender struct {
	table string
	lsn   uint64
	rng   *rand.ChaCha8
	buf   []*witnessv1.Entry
}

func newAppender(table string, seed uint64) *appender {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return &appender{table: table, rng: rand.NewChaCha8(s)}
}

func (a *appender) batch(n int) []*witnessv1.Entry {
	for len(a.buf) < n {
		a.buf = append(a.buf, &witnessv1.Entry{Op: witnessv1.Op_OP_INSERT, KeyCommit: make([]byte, 32), DataCommit: make([]byte, 32)})
	}
	a.lsn++
	now := time.Now().UnixMicro()
	out := a.buf[:n]
	for i, e := range out {
		e.CommitLsn, e.TxIndex, e.CommitTimeMicros, e.Xid = a.lsn<<8, uint32(i), now, uint32(a.lsn)
		_, _ = a.rng.Read(e.KeyCommit)
		_, _ = a.rng.Read(e.DataCommit)
	}
	return out
}

// payloadSize is the size of the Raft entry the witness proposes for an
// Append of n entries: the bare cluster applies entries of this size.
func payloadSize(n int) int {
	a := newAppender("bench.t0", 0)
	return proto.Size(&witnessv1.Command{
		ProposedAtMicros: time.Now().UnixMicro(),
		Command:          &witnessv1.Command_Append{Append: &witnessv1.AppendCommand{Table: a.table, Entries: a.batch(n)}},
	})
}

func runB11(ctx context.Context, e *Env) []report.Row {
	b := &b11{}
	if err := b.run(ctx, e); err != nil {
		return []report.Row{failed("B11", "witness append", err)}
	}
	return b.rows(e)
}

func (b *b11) run(ctx context.Context, e *Env) error {
	dir, err := e.dir("b11")
	if err != nil {
		return err
	}
	e.Logf("B11: starting a %d-node witness cluster (real processes, mutual TLS) and a bare Raft cluster", len(b11Witnesses))
	wc, err := witnessproc.Start(ctx, e.Bin, filepath.Join(dir, "witness"), b11Witnesses)
	if err != nil {
		return err
	}
	defer wc.Stop()
	bc, err := bareraft.Start(ctx, e.Self, filepath.Join(dir, "raft"), b11Bare)
	if err != nil {
		return err
	}
	defer bc.Stop()
	leader, err := wc.Leader(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	b.leader = leader.ID
	cl := wc.Client(leader.ID)
	apps := make([]*appender, b11Callers)
	for i := range apps {
		apps[i] = newAppender(fmt.Sprintf("bench.t%d", i), uint64(i))
		if _, err := cl.RegisterTable(ctx, connect.NewRequest(&witnessv1.RegisterTableRequest{Table: apps[i].table, Mode: witnessv1.TableMode_TABLE_MODE_APPEND_ONLY})); err != nil {
			return fmt.Errorf("register %s: %w", apps[i].table, err)
		}
	}
	var witnessRoots, bareRoots []cpuuse.Root
	for _, pid := range wc.PIDs() {
		witnessRoots = append(witnessRoots, cpuuse.Root{Group: "witness cluster", PID: pid})
	}
	for _, pid := range bc.PIDs() {
		bareRoots = append(bareRoots, cpuuse.Root{Group: "bare Raft cluster", PID: pid})
	}
	roots := append(witnessRoots, bareRoots...)

	witness := func(size, callers int, d time.Duration) (closedloop.Result, cpuuse.Usage, error) {
		cpu := e.cpuMeter(roots...)
		res := closedloop.Run(ctx, callers, d, func(ctx context.Context, caller, _ int) error {
			return b.append(ctx, cl, apps[caller], size)
		})
		u := cpu()
		if res.FirstErr != nil {
			return res, u, fmt.Errorf("witness Append of %d entries: %d calls failed, first: %w", size, res.Errors, res.FirstErr)
		}
		return res, u, nil
	}
	bare := func(payload, callers int, d time.Duration) (closedloop.Result, cpuuse.Usage, error) {
		cpu := e.cpuMeter(roots...)
		res, err := bc.Load(ctx, payload, callers, d)
		u := cpu()
		if err == nil && res.FirstErr != nil {
			err = fmt.Errorf("%d calls failed, first: %w", res.Errors, res.FirstErr)
		}
		if err != nil {
			return res, u, fmt.Errorf("bare Raft apply of %d bytes: %w", payload, err)
		}
		return res, u, nil
	}

	for _, size := range b11Sizes {
		s := b11Size{size: size, payload: payloadSize(size)}
		e.Logf("B11: %d hashes per entry (%d-byte Raft entries): %d callers for %s on the bare Raft cluster, then on the witnesses; then one caller on the witnesses, then on the bare cluster, %s each",
			size, s.payload, b11Callers, e.D.B11Load, e.D.B11Latency)
		if s.bare.load, s.bare.cpuLoad, err = bare(s.payload, b11Callers, e.D.B11Load); err != nil {
			return err
		}
		if s.witness.load, s.witness.cpuLoad, err = witness(size, b11Callers, e.D.B11Load); err != nil {
			return err
		}
		if s.witness.one, s.witness.cpuOne, err = witness(size, 1, e.D.B11Latency); err != nil {
			return err
		}
		if s.bare.one, s.bare.cpuOne, err = bare(s.payload, 1, e.D.B11Latency); err != nil {
			return err
		}
		b.sizes = append(b.sizes, s)
	}
	if n := b.duplicates.Load(); n > 0 {
		return fmt.Errorf("the witnesses skipped %d entries as replays: the appended counts would be wrong", n)
	}
	return nil
}

func (b *b11) append(ctx context.Context, cl witnessv1connect.WitnessServiceClient, a *appender, size int) error {
	ctx, cancel := context.WithTimeout(ctx, b11CallTimeout)
	defer cancel()
	resp, err := cl.Append(ctx, connect.NewRequest(&witnessv1.AppendRequest{Table: a.table, Entries: a.batch(size)}))
	if err != nil {
		return err
	}
	b.duplicates.Add(int64(resp.Msg.GetDuplicates()))
	return nil
}

// side sums up one closed-loop run after its warm-up: hashes/s and the
// latency of every call.
func side(r closedloop.Result, size int, warmup time.Duration) (rate float64, w report.Window, lat stats.Summary) {
	from := r.Start.Add(warmup)
	calls, _ := r.Rate(from, r.End)
	w = report.Window{Start: from, End: r.End, Seconds: r.End.Sub(from).Seconds(), Description: fmt.Sprintf("from %s after the first call to the end of the run", warmup)}
	return calls * float64(size), w, stats.Summarize(r.Latencies(from))
}

func (b *b11) rows(e *Env) []report.Row {
	var out []report.Row
	for _, s := range b.sizes {
		id := fmt.Sprintf("B11.%d", s.size)
		wRate, wWin, wLoadLat := side(s.witness.load, s.size, e.D.B11Warmup)
		bRate, _, bLoadLat := side(s.bare.load, s.size, e.D.B11Warmup)
		_, _, wOne := side(s.witness.one, s.size, e.D.B11Warmup)
		_, _, bOne := side(s.bare.one, s.size, e.D.B11Warmup)
		per := "hash"
		if s.size > 1 {
			per = "hashes"
		}
		common := fmt.Sprintf("%d %s per Append = per Raft entry (%d-byte entries); 3 witness processes on loopback with mutual TLS on the API and the Raft transport, their default settings, Append over Connect (gRPC protocol) as service/cdc-ingest to the leader (%s); bare cluster: 3 processes of hashicorp/raft v1.7.3 with raft.DefaultConfig, raft-boltdb/v2, the plain TCP transport and a state machine that counts, raft.Apply called in the leader's process",
			s.size, per, s.payload, b.leader)
		tput := report.Row{
			ID: id, Title: fmt.Sprintf("witness append, %d per entry", s.size),
			Metric: fmt.Sprintf("hashes/s appended to a 3-node witness cluster at %d per Raft entry, %d callers back to back", s.size, b11Callers),
			Value:  report.F(wRate), Unit: "hashes/s", Window: &wWin, Samples: len(s.witness.load.Calls),
			BaselineMetric: fmt.Sprintf("hashes/s through a bare 3-node hashicorp/raft cluster, same entry size, %d callers of raft.Apply", b11Callers),
			Baseline:       report.F(bRate), BaselineUnit: "hashes/s",
			Notes: []string{
				common,
				fmt.Sprintf("order: bare cluster %s, witnesses %s (then the one-caller runs of %s.lat: witnesses, bare cluster); each caller appends to its own table (append-only, 1,024 state-digest buckets), one transaction per Append", e.D.B11Load, e.D.B11Load, id),
				fmt.Sprintf("latency of a call at this load: witnesses p50 %s · p99 %s ms, bare Raft p50 %s · p99 %s ms", fmtMS(wLoadLat.P50), fmtMS(wLoadLat.P99), fmtMS(bLoadLat.P50), fmtMS(bLoadLat.P99)),
				fmt.Sprintf("Raft entries/s: witnesses %.0f, bare %.0f", wRate/float64(s.size), bRate/float64(s.size)),
				"CPU on the witnesses: " + s.witness.cpuLoad.String(),
				"CPU on the bare cluster: " + s.bare.cpuLoad.String(),
			},
		}
		tput.Notes = append(tput.Notes, noiseNote(s.witness.cpuLoad, s.bare.cpuLoad)...)
		lat := report.Row{
			ID: id + ".lat", Title: fmt.Sprintf("witness append latency, %d per entry", s.size),
			Metric: fmt.Sprintf("commit latency of an Append of %d %s, one at a time (sent → answered: quorum-committed and applied on the leader), ms", s.size, per),
			Value:  report.F(wOne.P99), Unit: "ms", Latency: &wOne, Samples: wOne.N,
			BaselineMetric: "raft.Apply → future answered on the bare cluster's leader, one at a time, same entry size",
			Baseline:       report.F(bOne.P99), BaselineLatency: &bOne,
			Notes: []string{
				fmt.Sprintf("one caller for %s on each cluster, the first %s left out; hashes/s at one caller: witnesses %.0f, bare %.0f", e.D.B11Latency, e.D.B11Warmup, rateOf(s.witness.one, s.size, e.D.B11Warmup), rateOf(s.bare.one, s.size, e.D.B11Warmup)),
				"CPU on the witnesses: " + s.witness.cpuOne.String(),
				"CPU on the bare cluster: " + s.bare.cpuOne.String(),
			},
		}
		lat.Notes = append(lat.Notes, noiseNote(s.witness.cpuOne, s.bare.cpuOne)...)
		out = append(out, tput, lat)
	}
	return out
}

func rateOf(r closedloop.Result, size int, warmup time.Duration) float64 {
	v, _, _ := side(r, size, warmup)
	return v
}

func fmtMS(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	if v >= 10 {
		s = fmt.Sprintf("%.1f", v)
	}
	return strings.TrimSuffix(s, ".00")
}
