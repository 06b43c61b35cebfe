package faulttest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"google.golang.org/protobuf/reflect/protoreflect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// TestAlteredState stops a follower of a 3-node cluster, alters its Raft
// log on disk and starts it again.
//
// The witness takes no snapshot within a test's time (the snapshot
// interval and threshold are not flags; TestDamagedSnapshot covers
// snapshots), so the node's whole state is its raft.db, which it replays
// at start. bbolt keeps no checksums and Raft compares only terms and
// indexes with the leader, so:
//
//   - a commitment changed in place (the log stays decodable) is applied as
//     it is: the node rejoins, follows new appends, and serves a root that
//     differs from the majority's at the same size, which comparing nodes
//     shows. With cosigned checkpoints its cosignature is refused, the
//     checkpoint is cosigned by the others, and the refusal, naming the
//     node, is in every node's GetStatus (that step is skipped when the
//     witness binary has no cosigning flags or GetCheckpoint).
//   - a change that makes an entry undecodable stops the node when it
//     replays it, naming the Raft index, instead of letting it diverge.
func TestAlteredState(t *testing.T) {
	skipShort(t)
	cosign := cosigningFlags(t)
	c := newCluster(t, clusterSpec{size: 3, timing: fast, cosign: cosign})
	g := newGenerator(c, 3, 8)
	if err := g.register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.appendN(t.Context(), 60); err != nil {
		t.Fatal(err)
	}
	c.sameLog(t, g, 30*time.Second, c.nodes...)
	leader := c.leader(t, c.nodes...)
	f := c.others(leader)[0]
	honest := c.others(f)
	raftDB := filepath.Join(f.dataDir, "raft.db")

	t.Run("altered commitment diverges visibly", func(t *testing.T) {
		if err := f.stop(); err != nil {
			t.Fatal(err)
		}
		_, _, leaves := g.expected()
		k := len(leaves) / 2
		target := g.entries[k].DataCommit
		n := alterFile(t, raftDB, target, func(b []byte) { b[len(b)-1] ^= 0x01 })
		t.Logf("flipped the last bit of entry %d's data commitment in %s of %s (%d copies in the file)", k, filepath.Base(raftDB), f.id, n)
		// The cluster goes on without it, then it comes back.
		if err := g.appendN(t.Context(), 20); err != nil {
			t.Fatal(err)
		}
		c.start(t, f)
		size, root, want := g.expected()
		pollUntil(t, 30*time.Second, f.id+" to replay and catch up", func() error {
			select {
			case <-f.exited():
				t.Fatalf("%s exited after its log was altered: %v\n%s", f.id, f.exitError(), fileTail(f.logPath, 20))
			default:
			}
			ti, err := f.tableInfo(t.Context(), g.table)
			if err != nil {
				return err
			}
			if ti.Size < size {
				return fmt.Errorf("%s at size %d, want %d", f.id, ti.Size, size)
			}
			return nil
		})
		c.sameLog(t, g, 30*time.Second, honest...)
		ti, err := f.tableInfo(t.Context(), g.table)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ti.Root, root) {
			t.Fatalf("%s serves the majority's root %x at size %d although entry %d of its log was altered", f.id, root, size, k)
		}
		got, err := f.leaves(t.Context(), g.table)
		if err != nil {
			t.Fatal(err)
		}
		var differ []int
		for i := range min(len(got), len(want)) {
			if !bytes.Equal(got[i], want[i]) {
				differ = append(differ, i)
			}
		}
		if len(got) != len(want) || len(differ) != 1 || differ[0] != k {
			t.Fatalf("%s holds %d leaves differing from the acknowledged ones at %v; want %d leaves differing at [%d] only", f.id, len(got), differ, len(want), k)
		}
		t.Logf("%s rejoined and serves size %d with root %x; the majority's root is %x; only leaf %d differs: the replicas disagree from that entry on",
			f.id, ti.Size, ti.Root, root, k)
	})

	t.Run("cosignature of the altered node is refused and reported", func(t *testing.T) {
		if !cosign {
			t.Skip("the witness binary has no --cosign-key/--policy/--checkpoint-interval flags: this step runs once cosigned checkpoints (issue 6, point 4) land")
		}
		_, err := leader.client.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: g.table}))
		if connect.CodeOf(err) == connect.CodeUnimplemented {
			t.Skipf("GetCheckpoint is not implemented by this witness (%v): this step runs once cosigned checkpoints (issue 6, point 4) land", err)
		}
		keys := map[string]string{}
		for _, n := range c.nodes {
			st, err := n.status(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if st.CosignerKey == "" {
				t.Fatalf("%s reports no cosigner_key in GetStatus although it was started with --cosign-key", n.id)
			}
			keys[n.id] = st.CosignerKey
		}
		// The log grew since f came back: the next checkpoint is made
		// after f's replica diverged.
		if err := g.appendN(t.Context(), 5); err != nil {
			t.Fatal(err)
		}
		size, root, _ := g.expected()
		var note string
		pollUntil(t, 30*time.Second, fmt.Sprintf("a cosigned checkpoint of size %d", size), func() error {
			resp, err := leader.client.GetCheckpoint(t.Context(), connect.NewRequest(&witnessv1.GetCheckpointRequest{Table: g.table}))
			if err != nil {
				return err
			}
			if resp.Msg.Size < size {
				return fmt.Errorf("latest checkpoint at size %d", resp.Msg.Size)
			}
			if !bytes.Equal(resp.Msg.Root, root) {
				t.Fatalf("the checkpoint at size %d has root %x; the acknowledged log's is %x", resp.Msg.Size, resp.Msg.Root, root)
			}
			note = string(resp.Msg.Note)
			return nil
		})
		for _, n := range honest {
			if !signedBy(note, keys[n.id]) {
				t.Errorf("the checkpoint carries no cosignature of %s (%s):\n%s", n.id, keys[n.id], note)
			}
		}
		if signedBy(note, keys[f.id]) {
			t.Errorf("the checkpoint carries a cosignature of %s, whose state was altered:\n%s", f.id, note)
		}
		// The refusal is evidence in the replicated state, naming the node,
		// on every node (read by field name: GetStatus gained it with
		// cosigning).
		for _, n := range c.nodes {
			pollUntil(t, 30*time.Second, n.id+" to report the refusal of "+f.id, func() error {
				st, err := n.status(t.Context())
				if err != nil {
					return err
				}
				refusals, ok := cosignRefusals(st)
				if !ok {
					t.Skip("GetStatus has no cosign_refusals field: this check runs once cosigning records refusals")
				}
				for _, r := range refusals {
					if r.node == f.id && r.table == g.table && (r.kind == "COSIGN_REFUSAL_KIND_ROOT_MISMATCH" || r.kind == "COSIGN_REFUSAL_KIND_FORK") {
						if n == leader {
							t.Logf("%s reports: %s refused size %d (%s): %s", n.id, r.node, r.size, r.kind, r.reason)
						}
						return nil
					}
				}
				return fmt.Errorf("%s reports refusals %+v", n.id, refusals)
			})
		}
	})

	t.Run("undecodable entry stops the node", func(t *testing.T) {
		if err := f.stop(); err != nil {
			t.Fatal(err)
		}
		// The length of entry j's data_commit field (protobuf tag 5, wire
		// type 2 = 0x2a, length 0x20) grows beyond its message.
		j := len(g.entries) / 4
		n := alterFile(t, raftDB, append([]byte{0x2a, 0x20}, g.entries[j].DataCommit...), func(b []byte) { b[1] = 0x7f })
		t.Logf("made entry %d undecodable in %s of %s (%d copies in the file)", j, filepath.Base(raftDB), f.id, n)
		c.start(t, f)
		select {
		case <-f.exited():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still runs 30s after replaying an undecodable entry\n%s", f.id, fileTail(f.logPath, 20))
		}
		var exit *exec.ExitError
		if err := f.exitError(); !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("%s ended with %v; want a non-zero exit status", f.id, err)
		}
		log := lastRun(t, f)
		i := strings.Index(log, "panic: witness fsm: raft log ")
		if i < 0 || !strings.Contains(log[i:], "is not a witness command") || !strings.Contains(log[i:], "refusing to diverge") {
			t.Fatalf("%s's output does not say which Raft entry it refused:\n%s", f.id, fileTail(f.logPath, 20))
		}
		t.Logf("%s stopped (%v): %s", f.id, f.exitError(), strings.SplitN(log[i:], "\n", 2)[0])
		// The other two go on.
		if err := g.appendN(t.Context(), 10); err != nil {
			t.Fatal(err)
		}
		c.sameLog(t, g, 30*time.Second, honest...)
	})
}

// alterFile applies alter to every occurrence of needle in the file and
// returns how many there were; the test fails if there are none.
func alterFile(t *testing.T, path string, needle []byte, alter func([]byte)) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], needle)
		if j < 0 {
			break
		}
		alter(b[i+j : i+j+len(needle)])
		n++
		i += j + len(needle)
	}
	if n == 0 {
		t.Fatalf("%s does not hold the %d bytes to alter", path, len(needle))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// refusal is one cosign_refusals entry of GetStatus.
type refusal struct {
	node, table, kind, reason string
	size                      uint64
}

// cosignRefusals reads GetStatus's cosign_refusals by field name, so the
// test builds against a GetStatusResponse without them; ok is false when
// the field does not exist.
func cosignRefusals(st *witnessv1.GetStatusResponse) (out []refusal, ok bool) {
	m := st.ProtoReflect()
	fd := m.Descriptor().Fields().ByName("cosign_refusals")
	if fd == nil || !fd.IsList() || fd.Message() == nil {
		return nil, false
	}
	list := m.Get(fd).List()
	for i := range list.Len() {
		r := list.Get(i).Message()
		field := func(name protoreflect.Name) protoreflect.Value {
			f := r.Descriptor().Fields().ByName(name)
			if f == nil {
				return protoreflect.Value{}
			}
			return r.Get(f)
		}
		x := refusal{}
		if v := field("node_id"); v.IsValid() {
			x.node = v.String()
		}
		if v := field("table"); v.IsValid() {
			x.table = v.String()
		}
		if v := field("reason"); v.IsValid() {
			x.reason = v.String()
		}
		if v := field("size"); v.IsValid() {
			x.size = v.Uint()
		}
		if f := r.Descriptor().Fields().ByName("kind"); f != nil && f.Enum() != nil {
			if ev := f.Enum().Values().ByNumber(r.Get(f).Enum()); ev != nil {
				x.kind = string(ev.Name())
			}
		}
		out = append(out, x)
	}
	return out, true
}

// signedBy reports whether a signed note (C2SP signed-note) carries a
// signature line of the verifier key vkey ("name+hash+key").
func signedBy(note, vkey string) bool {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return false
	}
	name, hash := parts[0], parts[1]
	_, sigs, ok := strings.Cut(note, "\n\n")
	if !ok {
		return false
	}
	for _, line := range strings.Split(sigs, "\n") {
		rest, ok := strings.CutPrefix(line, "\u2014 "+name+" ")
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(rest)
		if err == nil && len(sig) >= 4 && fmt.Sprintf("%x", sig[:4]) == hash {
			return true
		}
	}
	return false
}
