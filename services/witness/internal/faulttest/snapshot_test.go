package faulttest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/logging"
	"github.com/witnz/witnz/services/witness/internal/app"
	"github.com/witnz/witnz/services/witness/internal/config"
)

// snapshotIn runs node n in process, on its own data directory, addresses
// and certificate, with snapshots taken after every few entries and the
// Raft log compacted behind them, appends more batches, and stops it once
// it has caught up with the acknowledged log and written a new snapshot. The witness
// binary offers no flag for the snapshot interval or threshold (it takes
// one every 8,192 entries, at most every 2 to 4 minutes), so this is how a
// test gets a snapshot the node itself wrote.
func snapshotIn(t *testing.T, g *generator, n *node, more int) []snapshot {
	t.Helper()
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	before := snapshots(t, n)
	cfg, err := config.Parse(n.args, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Raft.SnapshotInterval = 50 * time.Millisecond
	cfg.Raft.SnapshotThreshold = 4
	cfg.Raft.TrailingLogs = 2
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s in process, to take a snapshot\n", n.id)
	log, err := logging.New(logf, "witness", logging.Options{Level: "info", Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	running := true
	stop := func() error {
		if !running {
			return nil
		}
		running = false
		cancel()
		return <-done
	}
	defer stop()
	if more > 0 {
		if err := g.appendN(t.Context(), more); err != nil {
			t.Fatal(err)
		}
	}
	size, _, _ := g.expected()
	pollUntil(t, 30*time.Second, n.id+" to catch up and write a snapshot", func() error {
		ti, err := n.tableInfo(t.Context(), g.table)
		if err != nil {
			return err
		}
		if ti.Size < size {
			return fmt.Errorf("%s at size %d, want %d", n.id, ti.Size, size)
		}
		if snaps := snapshots(t, n); len(snaps) == 0 || len(before) > 0 && snaps[len(snaps)-1].index <= before[len(before)-1].index {
			return fmt.Errorf("%s has no new snapshot yet", n.id)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("stop %s in process: %v", n.id, err)
	}
	return snapshots(t, n)
}

// snapshot is one of a node's snapshot directories.
type snapshot struct {
	dir         string
	term, index uint64
}

func (s snapshot) state() string { return filepath.Join(s.dir, "state.bin") }

// snapshots lists the node's complete snapshots, oldest first.
func snapshots(t *testing.T, n *node) []snapshot {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.dataDir, "snapshots"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []snapshot
	for _, e := range entries {
		var s snapshot
		var ms uint64
		// <term>-<index>-<ms>; a snapshot being written ends in .tmp.
		if e.IsDir() && filepath.Ext(e.Name()) != ".tmp" {
			if _, err := fmt.Sscanf(e.Name(), "%d-%d-%d", &s.term, &s.index, &ms); err == nil {
				s.dir = filepath.Join(n.dataDir, "snapshots", e.Name())
				out = append(out, s)
			}
		}
	}
	slices.SortFunc(out, func(a, b snapshot) int {
		if a.term != b.term {
			return cmp.Compare(a.term, b.term)
		}
		return cmp.Compare(a.index, b.index)
	})
	return out
}

// TestDamagedSnapshot damages the newest snapshot of a follower in ways
// of increasing cunning and restarts it each time. The node must refuse to
// start on a damaged snapshot, with a message that leads to it, and start
// and catch up once the snapshot is repaired.
func TestDamagedSnapshot(t *testing.T) {
	skipShort(t)
	c := newCluster(t, clusterSpec{size: 3, timing: fast})
	g := newGenerator(c, 9, 8)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.appendN(t.Context(), 40); err != nil {
		t.Fatal(err)
	}
	c.sameLog(t, g, 30*time.Second, c.nodes...)
	f := c.others(c.leader(t, c.nodes...))[0]
	snaps := snapshotIn(t, g, f, 0)
	newest := snaps[len(snaps)-1]
	pristine, err := os.ReadFile(newest.state())
	if err != nil {
		t.Fatal(err)
	}
	meta, err := os.ReadFile(filepath.Join(newest.dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s holds %d snapshot(s); the newest, %s, covers Raft index %d; its log was compacted behind it", f.id, len(snaps), filepath.Base(newest.dir), newest.index)

	_, _, leaves := g.expected()
	entry := g.entries[len(leaves)/3].DataCommit
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		fixCRC bool
		want   string // in the node's output besides its one-line error
	}{
		{name: "one bit flipped", damage: func(b []byte) []byte {
			b[len(b)/2] ^= 0x01
			return b
		}, want: "CRC mismatch"},
		{name: "one bit flipped, Raft's CRC recomputed", fixCRC: true, damage: func(b []byte) []byte {
			b[len(b)/2] ^= 0x01
			return b
		}, want: "witness fsm: restore snapshot"},
		{name: "a commitment altered, every checksum recomputed", fixCRC: true, damage: func(b []byte) []byte {
			i := bytes.Index(b, entry)
			if i < 0 {
				t.Fatal("the snapshot does not hold the entry's data commitment")
			}
			b[i] ^= 0x01
			sum := sha256.Sum256(b[:len(b)-sha256.Size])
			copy(b[len(b)-sha256.Size:], sum[:])
			return b
		}, want: "witness fsm: restore snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			damaged := tc.damage(slices.Clone(pristine))
			if err := os.WriteFile(newest.state(), damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.fixCRC {
				writeMeta(t, newest, meta, damaged)
			}
			t.Cleanup(func() {
				os.WriteFile(newest.state(), pristine, 0o600)
				os.WriteFile(filepath.Join(newest.dir, "meta.json"), meta, 0o600)
			})
			c.start(t, f)
			checkRefused(t, f, newest, tc.want, true)
		})
	}

	// With two snapshots and the log compacted behind the newer one, the
	// older one cannot stand in for a damaged newer one: the entries
	// between them are gone. hashicorp/raft panics there; the node turns
	// that into one line naming --data-dir and the fix.
	t.Run("newest of two snapshots flipped, log compacted between them", func(t *testing.T) {
		snaps := snapshotIn(t, g, f, 5)
		if len(snaps) != 2 {
			t.Fatalf("%s holds %d snapshots; want 2", f.id, len(snaps))
		}
		newest := snaps[1]
		pristine, err := os.ReadFile(newest.state())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(newest.state(), pristine, 0o600) })
		damaged := slices.Clone(pristine)
		damaged[len(damaged)/2] ^= 0x01
		if err := os.WriteFile(newest.state(), damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s holds snapshots at Raft indexes %d and %d, its log from %d on; flipped one bit of the newer", f.id, snaps[0].index, newest.index, newest.index-1)
		c.start(t, f)
		checkRefused(t, f, newest, "CRC mismatch", true)
	})

	// Repaired, the node starts from its snapshot and catches up.
	c.start(t, f)
	if err := g.appendN(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	c.sameLog(t, g, 30*time.Second, c.nodes...)
}

// checkRefused waits for node n to exit after a restart on the damaged
// snapshot s and checks that it said why: exit status 1, a last line
// naming its --data-dir, and an error in its log naming the snapshot and
// the reason want. With oneLine unset, any non-zero exit status and last
// line are accepted (and logged).
func checkRefused(t *testing.T, n *node, s snapshot, want string, oneLine bool) {
	t.Helper()
	select {
	case <-n.exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still runs 30s after a restart on a damaged snapshot\n%s", n.id, fileTail(n.logPath, 20))
	}
	out := lastRun(t, n)
	lines := strings.Split(out, "\n")
	last := lines[len(lines)-1]
	var exit *exec.ExitError
	if err := n.exitError(); !errors.As(err, &exit) || exit.ExitCode() <= 0 || oneLine && exit.ExitCode() != 1 {
		t.Fatalf("%s ended with %v; want a non-zero exit status (1 with one line naming the problem)\n%s", n.id, err, out)
	}
	if i := strings.Index(out, "\npanic: "); !oneLine && i >= 0 {
		last = strings.SplitN(out[i+1:], "\n", 2)[0] + " (and a stack trace)"
	}
	if oneLine && (!strings.HasPrefix(last, "witness: ") || !strings.Contains(last, "--data-dir "+n.dataDir)) {
		t.Fatalf("%s's last line is %q; want one line naming --data-dir %s", n.id, last, n.dataDir)
	}
	for _, line := range lines {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, filepath.Base(s.dir)) && strings.Contains(line, want) {
			t.Logf("%s refused to start (%v), saying %q after logging: %s", n.id, n.exitError(), last, line)
			return
		}
	}
	t.Fatalf("%s logged no error naming snapshot %s and %q:\n%s", n.id, filepath.Base(s.dir), want, out)
}

// writeMeta rewrites a snapshot's meta.json with the CRC-64 (ECMA) of
// state, as hashicorp/raft's file snapshot store records it.
func writeMeta(t *testing.T, s snapshot, meta, state []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(meta, &m); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(state)
	m["CRC"] = h.Sum(nil) // encoding/json writes []byte as base64, as raft does
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "meta.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}
