package statedigest

import (
	"errors"
	"fmt"
	"iter"

	"github.com/witnz/witnz/libs/commitment"
	"github.com/witnz/witnz/libs/lthash"
)

// Mode is a table's mode; its values match witnz.witness.v1.TableMode.
type Mode uint8

// Modes.
const (
	// AppendOnly: only inserts are legitimate; UPDATE and DELETE leave the
	// expected state unchanged until an operator ACCEPTs them.
	AppendOnly Mode = 1
	// Mutable: the expected state follows every logged change.
	Mutable Mode = 2
)

func (m Mode) String() string {
	switch m {
	case AppendOnly:
		return "append-only"
	case Mutable:
		return "mutable"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ErrChange is wrapped by errors about a change that cannot be applied: an
// unknown op or mode, or a commitment the op needs that is absent.
var ErrChange = errors.New("statedigest: invalid change")

// Change is what a log entry says about a row. A zero commitment is
// absent, as in the entry encoding.
type Change struct {
	Op      commitment.Op
	Key     commitment.Commitment
	Data    commitment.Commitment
	OldData commitment.Commitment
}

// ChangeOf returns the change a log entry records.
func ChangeOf(e *commitment.Entry) Change {
	c := Change{Op: e.Op}
	for _, f := range []struct{ dst, src *commitment.Commitment }{
		{&c.Key, e.KeyCommit}, {&c.Data, e.DataCommit}, {&c.OldData, e.OldDataCommit},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return c
}

// Effect is what a change does to the expected row set: remove the row
// (Key, Removed) if Remove, then add (Key, Added) if Add.
type Effect struct {
	Key     commitment.Commitment
	Remove  bool
	Removed commitment.Commitment
	Add     bool
	Added   commitment.Commitment
}

// EffectOf is the one definition of what each op does to the expected
// state in a table of mode m (the table in the package documentation).
func EffectOf(c Change, m Mode) (Effect, error) {
	if m != AppendOnly && m != Mutable {
		return Effect{}, fmt.Errorf("%w: unknown table mode %d", ErrChange, m)
	}
	key := field{"key_commit", c.Key}
	data := field{"data_commit", c.Data}
	old := field{"old_data_commit", c.OldData}
	switch c.Op {
	case commitment.OpBaseline, commitment.OpInsert:
		return checked(c.Op, Effect{Key: c.Key, Add: true, Added: c.Data}, key, data)
	case commitment.OpUpdate:
		if m == AppendOnly {
			return Effect{}, nil
		}
		return checked(c.Op, Effect{Key: c.Key, Remove: true, Removed: c.OldData, Add: true, Added: c.Data}, key, data, old)
	case commitment.OpDelete:
		if m == AppendOnly {
			return Effect{}, nil
		}
		return checked(c.Op, Effect{Key: c.Key, Remove: true, Removed: c.OldData}, key, old)
	case commitment.OpAccept:
		if c.Data.IsZero() && c.OldData.IsZero() {
			return Effect{}, fmt.Errorf("%w: ACCEPT needs data_commit, old_data_commit or both", ErrChange)
		}
		return checked(c.Op, Effect{
			Key:    c.Key,
			Remove: !c.OldData.IsZero(), Removed: c.OldData,
			Add: !c.Data.IsZero(), Added: c.Data,
		}, key)
	case commitment.OpTruncate, commitment.OpSchema, commitment.OpHeartbeat,
		commitment.OpProtect, commitment.OpUnprotect, commitment.OpAnchor:
		return Effect{}, nil
	}
	return Effect{}, fmt.Errorf("%w: unknown op %v", ErrChange, c.Op)
}

type field struct {
	name  string
	value commitment.Commitment
}

// checked returns e, or an error naming the first required commitment that
// is absent.
func checked(op commitment.Op, e Effect, required ...field) (Effect, error) {
	for _, f := range required {
		if f.value.IsZero() {
			return Effect{}, fmt.Errorf("%w: %v without %s", ErrChange, op, f.name)
		}
	}
	return e, nil
}

// Apply applies a change to the expected state of a table of mode m. On
// error the digest is unchanged.
func (d *Digest) Apply(c Change, m Mode) error {
	e, err := EffectOf(c, m)
	if err != nil {
		return err
	}
	return d.apply(e.Key, e.Remove, e.Removed, e.Add, e.Added)
}

// Undo reverts Apply(c, m): Undo after Apply leaves the digest as it was.
// Reverting a run of changes one by one must go newest first; AsOf takes
// them in any order.
func (d *Digest) Undo(c Change, m Mode) error {
	e, err := EffectOf(c, m)
	if err != nil {
		return err
	}
	return d.apply(e.Key, e.Add, e.Added, e.Remove, e.Removed)
}

// apply removes (key, removed) if remove, then adds (key, added) if add.
// Both rows are in key's bucket, so the only failure, an empty bucket, is
// known before anything changes.
func (d *Digest) apply(key commitment.Commitment, remove bool, removed commitment.Commitment, add bool, added commitment.Commitment) error {
	if remove {
		if err := d.Remove(key, removed); err != nil {
			return err
		}
	}
	if add {
		d.Add(key, added)
	}
	return nil
}

// AsOf returns the digest as of an earlier log position X, given d, the
// digest after the whole log, and later, the changes logged after X (in
// any order: only their net effect counts). d is not modified. It fails
// if a change is invalid or if a bucket would end with a negative count,
// which means later does not belong to d.
func (d *Digest) AsOf(m Mode, later iter.Seq[Change]) (*Digest, error) {
	type delta struct {
		n int64
		h lthash.Hash
	}
	net := map[uint32]*delta{}
	at := func(key commitment.Commitment) *delta {
		i := d.BucketOf(key)
		if net[i] == nil {
			net[i] = &delta{}
		}
		return net[i]
	}
	for c := range later {
		e, err := EffectOf(c, m)
		if err != nil {
			return nil, err
		}
		if e.Remove {
			x := at(e.Key)
			x.n--
			el := element(e.Key, e.Removed)
			x.h.Remove(el[:])
		}
		if e.Add {
			x := at(e.Key)
			x.n++
			el := element(e.Key, e.Added)
			x.h.Add(el[:])
		}
	}
	out := d.Clone()
	for i, x := range net {
		b := &out.buckets[i]
		switch {
		case x.n > 0 && b.Count < uint64(x.n):
			return nil, fmt.Errorf("%w: bucket %d has %d rows, the later changes add %d net", ErrUnderflow, i, b.Count, x.n)
		case x.n > 0:
			b.Count -= uint64(x.n)
		default:
			b.Count += uint64(-x.n)
		}
		b.Hash.SubState(&x.h)
		out.stale[i] = true
	}
	return out, nil
}
