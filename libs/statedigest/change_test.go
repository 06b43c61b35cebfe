package statedigest

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/witnz/witnz/libs/commitment"
)

var allOps = []commitment.Op{
	commitment.OpBaseline, commitment.OpInsert, commitment.OpUpdate, commitment.OpDelete,
	commitment.OpTruncate, commitment.OpSchema, commitment.OpHeartbeat, commitment.OpAccept,
	commitment.OpProtect, commitment.OpUnprotect, commitment.OpAnchor,
}

func TestEffectOf(t *testing.T) {
	k, d, o := sha("key"), sha("data"), sha("old")
	var z commitment.Commitment
	full := func(op commitment.Op) Change { return Change{Op: op, Key: k, Data: d, OldData: o} }
	none := Effect{}
	add := Effect{Key: k, Add: true, Added: d}
	remove := Effect{Key: k, Remove: true, Removed: o}
	replace := Effect{Key: k, Remove: true, Removed: o, Add: true, Added: d}
	tests := []struct {
		name   string
		change Change
		mode   Mode
		want   Effect
	}{
		{"baseline append-only", full(commitment.OpBaseline), AppendOnly, add},
		{"baseline mutable", full(commitment.OpBaseline), Mutable, add},
		{"insert append-only", full(commitment.OpInsert), AppendOnly, add},
		{"insert mutable", full(commitment.OpInsert), Mutable, add},
		{"update mutable", full(commitment.OpUpdate), Mutable, replace},
		{"update append-only keeps the original", full(commitment.OpUpdate), AppendOnly, none},
		{"delete mutable", Change{Op: commitment.OpDelete, Key: k, OldData: o}, Mutable, remove},
		{"delete append-only keeps the original", Change{Op: commitment.OpDelete, Key: k, OldData: o}, AppendOnly, none},
		{"accept update", full(commitment.OpAccept), AppendOnly, replace},
		{"accept update mutable", full(commitment.OpAccept), Mutable, replace},
		{"accept delete", Change{Op: commitment.OpAccept, Key: k, OldData: o}, AppendOnly, remove},
		{"accept phantom row", Change{Op: commitment.OpAccept, Key: k, Data: d}, Mutable, add},
		{"truncate", full(commitment.OpTruncate), Mutable, none},
		{"schema", full(commitment.OpSchema), Mutable, none},
		{"heartbeat", Change{Op: commitment.OpHeartbeat}, AppendOnly, none},
		{"protect", Change{Op: commitment.OpProtect}, AppendOnly, none},
		{"unprotect", Change{Op: commitment.OpUnprotect}, Mutable, none},
		{"anchor", Change{Op: commitment.OpAnchor}, Mutable, none},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EffectOf(tt.change, tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("EffectOf (-want +got):\n%s", diff)
			}
		})
	}

	bad := []struct {
		name   string
		change Change
		mode   Mode
	}{
		{"insert without key", Change{Op: commitment.OpInsert, Data: d}, Mutable},
		{"baseline without data", Change{Op: commitment.OpBaseline, Key: k}, AppendOnly},
		{"update without old data", Change{Op: commitment.OpUpdate, Key: k, Data: d}, Mutable},
		{"update without data", Change{Op: commitment.OpUpdate, Key: k, OldData: o}, Mutable},
		{"delete without old data", Change{Op: commitment.OpDelete, Key: k, Data: d}, Mutable},
		{"accept without data or old data", Change{Op: commitment.OpAccept, Key: k, Data: z}, AppendOnly},
		{"accept without key", Change{Op: commitment.OpAccept, Data: d, OldData: o}, AppendOnly},
		{"op 0", Change{Key: k, Data: d}, Mutable},
		{"op 12", Change{Op: 12, Key: k, Data: d}, Mutable},
		{"mode 0", full(commitment.OpInsert), 0},
		{"mode 3", full(commitment.OpHeartbeat), 3},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := EffectOf(tt.change, tt.mode); !errors.Is(err, ErrChange) {
				t.Errorf("error = %v, want ErrChange", err)
			}
			dg := mustNew(t, 4)
			dg.Add(k, o)
			before := dg.Clone()
			if err := dg.Apply(tt.change, tt.mode); !errors.Is(err, ErrChange) {
				t.Errorf("Apply error = %v, want ErrChange", err)
			}
			if err := dg.Undo(tt.change, tt.mode); !errors.Is(err, ErrChange) {
				t.Errorf("Undo error = %v, want ErrChange", err)
			}
			if !dg.Equal(before) {
				t.Error("a rejected change modified the digest")
			}
		})
	}
}

func TestChangeOf(t *testing.T) {
	k, d := sha("k"), sha("d")
	got := ChangeOf(&commitment.Entry{Seq: 7, Op: commitment.OpInsert, KeyCommit: &k, DataCommit: &d})
	if diff := cmp.Diff(Change{Op: commitment.OpInsert, Key: k, Data: d}, got); diff != "" {
		t.Errorf("ChangeOf (-want +got):\n%s", diff)
	}
	if got := ChangeOf(&commitment.Entry{Op: commitment.OpHeartbeat}); got != (Change{Op: commitment.OpHeartbeat}) {
		t.Errorf("ChangeOf(heartbeat) = %+v", got)
	}
}

func TestUndoAfterApply(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	d := mustNew(t, 8)
	var rows [][2]commitment.Commitment
	for range 30 {
		k, v := randCommit(r), randCommit(r)
		rows = append(rows, [2]commitment.Commitment{k, v})
		d.Add(k, v)
	}
	for _, mode := range []Mode{AppendOnly, Mutable} {
		for _, op := range allOps {
			row := rows[r.IntN(len(rows))]
			c := Change{Op: op, Key: row[0], Data: randCommit(r), OldData: row[1]}
			before, root := d.Clone(), d.Root()
			if err := d.Apply(c, mode); err != nil {
				t.Fatalf("%v %v: Apply: %v", mode, op, err)
			}
			if err := d.Undo(c, mode); err != nil {
				t.Fatalf("%v %v: Undo: %v", mode, op, err)
			}
			if !d.Equal(before) || d.Root() != root {
				t.Fatalf("%v %v: Undo(Apply(x)) != x", mode, op)
			}
		}
	}
}

// model is the table a random log is written against.
type model struct {
	rows map[commitment.Commitment]commitment.Commitment
	keys []commitment.Commitment
}

// randomLog returns n random changes valid against an initially empty
// table: baselines first, then inserts, updates and deletes, with a few
// table-level ops mixed in. It also returns the final rows.
func randomLog(r *rand.Rand, n int) ([]Change, map[commitment.Commitment]commitment.Commitment) {
	m := model{rows: map[commitment.Commitment]commitment.Commitment{}}
	var log []Change
	for i := range n {
		var c Change
		switch p := r.IntN(100); {
		case i < n/10:
			c = Change{Op: commitment.OpBaseline, Key: randCommit(r), Data: randCommit(r)}
		case p < 5:
			c = Change{Op: []commitment.Op{commitment.OpHeartbeat, commitment.OpSchema, commitment.OpAnchor}[r.IntN(3)]}
		case p < 45 || len(m.keys) == 0:
			c = Change{Op: commitment.OpInsert, Key: randCommit(r), Data: randCommit(r)}
		case p < 80:
			k := m.keys[r.IntN(len(m.keys))]
			c = Change{Op: commitment.OpUpdate, Key: k, Data: randCommit(r), OldData: m.rows[k]}
		default:
			j := r.IntN(len(m.keys))
			k := m.keys[j]
			c = Change{Op: commitment.OpDelete, Key: k, OldData: m.rows[k]}
			m.keys[j] = m.keys[len(m.keys)-1]
			m.keys = m.keys[:len(m.keys)-1]
			delete(m.rows, k)
		}
		switch c.Op {
		case commitment.OpBaseline, commitment.OpInsert:
			m.keys = append(m.keys, c.Key)
			fallthrough
		case commitment.OpUpdate:
			m.rows[c.Key] = c.Data
		}
		log = append(log, c)
	}
	return log, m.rows
}

func replay(t *testing.T, buckets int, mode Mode, log []Change) *Digest {
	t.Helper()
	d := mustNew(t, buckets)
	for i, c := range log {
		if err := d.Apply(c, mode); err != nil {
			t.Fatalf("change %d (%v): %v", i, c.Op, err)
		}
	}
	return d
}

// scan builds a digest the way the verifier does: one pass over the rows
// in whatever order they come.
func scan(t *testing.T, buckets int, rows map[commitment.Commitment]commitment.Commitment) *Digest {
	t.Helper()
	d := mustNew(t, buckets)
	for k, v := range rows { // map order is random
		d.Add(k, v)
	}
	return d
}

func TestScanEqualsLogReplayMutable(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	for round := range 5 {
		log, rows := randomLog(r, 400)
		fromLog := replay(t, 32, Mutable, log)
		fromScan := scan(t, 32, rows)
		if diff, _ := fromLog.Diff(fromScan); len(diff) != 0 || fromLog.Root() != fromScan.Root() {
			t.Fatalf("round %d: log and scan differ in buckets %v", round, diff)
		}
		if fromLog.Rows() != uint64(len(rows)) {
			t.Fatalf("round %d: Rows = %d, table has %d", round, fromLog.Rows(), len(rows))
		}
	}
}

// TestAppendOnlyKeepsOriginalsUntilAccepted: on an append-only table the
// expected state is every row as first written; ACCEPTing a change moves it
// to the table's actual content.
func TestAppendOnlyKeepsOriginalsUntilAccepted(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	log, actual := randomLog(r, 300)
	original := map[commitment.Commitment]commitment.Commitment{}
	for _, c := range log {
		if c.Op == commitment.OpBaseline || c.Op == commitment.OpInsert {
			original[c.Key] = c.Data
		}
	}
	d := replay(t, 16, AppendOnly, log)
	if !d.Equal(scan(t, 16, original)) {
		t.Fatal("append-only expected state is not the set of original rows")
	}
	if d.Equal(scan(t, 16, actual)) {
		t.Fatal("the random log changed nothing (test is too weak)")
	}
	// Accept every difference: updated rows and deleted ones.
	for k, v := range original {
		now, ok := actual[k]
		switch {
		case !ok:
			err := d.Apply(Change{Op: commitment.OpAccept, Key: k, OldData: v}, AppendOnly)
			if err != nil {
				t.Fatal(err)
			}
		case now != v:
			if err := d.Apply(Change{Op: commitment.OpAccept, Key: k, Data: now, OldData: v}, AppendOnly); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !d.Equal(scan(t, 16, actual)) {
		t.Fatal("after accepting every change the expected state differs from the table")
	}
}

func TestAsOf(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, mode := range []Mode{Mutable, AppendOnly} {
		log, _ := randomLog(r, 300)
		current := replay(t, 16, mode, log)
		currentRoot := current.Root()
		for _, x := range []int{0, 1, 29, 30, 150, 299, 300} {
			want := replay(t, 16, mode, log[:x])
			got, err := current.AsOf(mode, slices.Values(log[x:]))
			if err != nil {
				t.Fatalf("%v AsOf(%d): %v", mode, x, err)
			}
			if !got.Equal(want) || got.Root() != want.Root() {
				t.Fatalf("%v AsOf(%d) differs from replaying the first %d changes", mode, x, x)
			}
			// Net effect only: the later changes in any order.
			shuffled := slices.Clone(log[x:])
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got, err := current.AsOf(mode, slices.Values(shuffled)); err != nil || !got.Equal(want) {
				t.Fatalf("%v AsOf(%d) with shuffled changes: %v", mode, x, err)
			}
			// Undo newest first gets there too.
			seq := current.Clone()
			for i := len(log) - 1; i >= x; i-- {
				if err := seq.Undo(log[i], mode); err != nil {
					t.Fatalf("%v Undo(%d): %v", mode, i, err)
				}
			}
			if !seq.Equal(want) {
				t.Fatalf("%v undoing changes %d… one by one differs from the prefix replay", mode, x)
			}
		}
		if current.Root() != currentRoot {
			t.Fatal("AsOf modified the current digest")
		}
	}
}

func TestAsOfRejects(t *testing.T) {
	d := mustNew(t, 4)
	insert := Change{Op: commitment.OpInsert, Key: sha("k"), Data: sha("d")}
	if _, err := d.AsOf(Mutable, slices.Values([]Change{insert})); !errors.Is(err, ErrUnderflow) {
		t.Errorf("undoing an insert the digest never had: error = %v, want ErrUnderflow", err)
	}
	if _, err := d.AsOf(Mutable, slices.Values([]Change{{Op: 99}})); !errors.Is(err, ErrChange) {
		t.Errorf("unknown op: error = %v, want ErrChange", err)
	}
	// A later DELETE means the row existed at X even if it is gone now.
	del := Change{Op: commitment.OpDelete, Key: sha("k"), OldData: sha("d")}
	got, err := d.AsOf(Mutable, slices.Values([]Change{del}))
	if err != nil {
		t.Fatal(err)
	}
	want := mustNew(t, 4)
	want.Add(sha("k"), sha("d"))
	if !got.Equal(want) {
		t.Error("as of before a DELETE the row is not there")
	}
}
