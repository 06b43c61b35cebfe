package tlog

import (
	"bytes"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
)

// Verify recomputes the whole log from its leaves: every stored inner
// node, the root and the chain head. The first disagreement is an error
// wrapping ErrCorrupt. It reads every stored node once, so it costs O(n);
// reopening a log from a DB checks only the O(log n) nodes the reopened
// log starts from, and leaves changed on disk behind its back are found
// only here. Appends wait while Verify runs.
func (l *Log) Verify() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	size := l.rng.End()
	rng := factory.NewEmptyRange(0)
	var (
		chain [HashSize]byte
		ids   []compact.NodeID
		want  [][]byte
	)
	visit := func(id compact.NodeID, h []byte) {
		if id.Level > 0 {
			ids, want = append(ids, id), append(want, h)
		}
	}
	for from := uint64(0); from < size; from += scanChunk {
		to := min(size, from+scanChunk)
		err := l.store.leaves(from, to, func(_ uint64, h []byte) error {
			leaf := [HashSize]byte(h)
			chain = chainNext(chain, leaf)
			return rng.Append(leaf[:], visit)
		})
		if err != nil {
			return fmt.Errorf("tlog: verify: %w", err)
		}
		got, err := l.store.get(ids)
		if err != nil {
			return fmt.Errorf("tlog: verify: %w", err)
		}
		for i, id := range ids {
			if !bytes.Equal(got[i], want[i]) {
				return fmt.Errorf("tlog: verify: %w: node %d/%d is %x, its leaves give %x", ErrCorrupt, id.Level, id.Index, got[i], want[i])
			}
		}
		ids, want = ids[:0], want[:0]
	}
	if root := l.rootLocked(); !bytes.Equal(root[:], foldRoot(rng.Hashes())) {
		return fmt.Errorf("tlog: verify: %w: root %x, the leaves give %x", ErrCorrupt, root, foldRoot(rng.Hashes()))
	}
	if chain != l.chain {
		return fmt.Errorf("tlog: verify: %w: chain head %x, the leaves give %x", ErrCorrupt, l.chain, chain)
	}
	return nil
}
