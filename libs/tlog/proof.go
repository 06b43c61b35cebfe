package tlog

import (
	"fmt"

	"github.com/transparency-dev/merkle/proof"
)

// InclusionProof proves that the leaf at index is in the tree of the first
// size leaves.
func (l *Log) InclusionProof(index, size uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if size > l.rng.End() {
		return nil, fmt.Errorf("tlog: inclusion proof at size %d: %w (log size %d)", size, ErrOutOfRange, l.rng.End())
	}
	if index >= size {
		return nil, fmt.Errorf("tlog: inclusion proof of leaf %d at size %d: %w", index, size, ErrOutOfRange)
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("tlog: inclusion proof: %w", err)
	}
	return l.rehash(nodes)
}

// ConsistencyProof proves that the tree of the first to leaves extends the
// tree of the first from leaves.
func (l *Log) ConsistencyProof(from, to uint64) ([][]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if to > l.rng.End() {
		return nil, fmt.Errorf("tlog: consistency proof to size %d: %w (log size %d)", to, ErrOutOfRange, l.rng.End())
	}
	if from > to {
		return nil, fmt.Errorf("tlog: consistency proof from size %d to smaller size %d: %w", from, to, ErrOutOfRange)
	}
	nodes, err := proof.Consistency(from, to)
	if err != nil {
		return nil, fmt.Errorf("tlog: consistency proof: %w", err)
	}
	return l.rehash(nodes)
}

func (l *Log) rehash(nodes proof.Nodes) ([][]byte, error) {
	hashes, err := l.nodes(nodes.IDs)
	if err != nil {
		return nil, fmt.Errorf("tlog: proof node: %w", err)
	}
	out, err := nodes.Rehash(hashes, hashChildren)
	if err != nil {
		return nil, fmt.Errorf("tlog: proof: %w", err)
	}
	return out, nil
}

// VerifyInclusion checks an inclusion proof of leafHash at index against the
// root of the tree of size leaves. Hashes are 32 bytes, as they come off the
// wire.
func VerifyInclusion(index, size uint64, leafHash []byte, proofHashes [][]byte, root []byte) error {
	if len(root) != HashSize {
		return fmt.Errorf("tlog: root of %d bytes, want %d", len(root), HashSize)
	}
	if err := proof.VerifyInclusion(hasher, index, size, leafHash, proofHashes, root); err != nil {
		return fmt.Errorf("tlog: inclusion of leaf %d in tree of size %d: %w", index, size, err)
	}
	return nil
}

// VerifyConsistency checks that the tree of size2 leaves with root2 extends
// the tree of size1 leaves with root1.
func VerifyConsistency(size1, size2 uint64, proofHashes [][]byte, root1, root2 []byte) error {
	if len(root1) != HashSize || len(root2) != HashSize {
		return fmt.Errorf("tlog: roots of %d and %d bytes, want %d", len(root1), len(root2), HashSize)
	}
	if err := proof.VerifyConsistency(hasher, size1, size2, proofHashes, root1, root2); err != nil {
		return fmt.Errorf("tlog: consistency of size %d with size %d: %w", size1, size2, err)
	}
	return nil
}
