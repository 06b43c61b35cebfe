// Package store keeps the anchor service's receipts in a bbolt file
// (anchor.db in --data-dir), in the order they were made.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
)

var (
	bucketReceipts = []byte("receipts")
	// bucketPending holds receipts of objects written to the sink whose
	// witness commit has not succeeded yet, by object key.
	bucketPending = []byte("pending")
)

// FileName is the store's file in the data directory.
const FileName = "anchor.db"

// Store holds receipts keyed by a sequence number.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("--data-dir %s cannot be created: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("--data-dir %s: %s is locked by another process: is another anchor service running with this --data-dir?", dir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: open %s: %w", dir, path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketReceipts); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketPending)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Add appends a receipt.
func (s *Store) Add(r *anchorv1.Receipt) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketReceipts)
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		return bk.Put(k[:], b)
	})
}

// List returns up to limit receipts (0: all), newest first.
func (s *Store) List(limit int) ([]*anchorv1.Receipt, error) {
	var out []*anchorv1.Receipt
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReceipts).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			r := &anchorv1.Receipt{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("receipt store: record %x: %w", k, err)
			}
			out = append(out, r)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Latest returns the newest receipt, or nil when there is none.
func (s *Store) Latest() (*anchorv1.Receipt, error) {
	l, err := s.List(1)
	if err != nil || len(l) == 0 {
		return nil, err
	}
	return l[0], nil
}

// AddPending keeps the receipt of an object whose witness commit is still
// to be done.
func (s *Store) AddPending(r *anchorv1.Receipt) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPending).Put([]byte(r.GetKey()), b) })
}

// Pending returns the receipts still to be committed, oldest key first.
func (s *Store) Pending() ([]*anchorv1.Receipt, error) {
	var out []*anchorv1.Receipt
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			r := &anchorv1.Receipt{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("receipt store: pending %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

// Commit moves a pending receipt, now committed to the witness log, to
// the receipts (or adds it when it was not pending).
func (s *Store) Commit(r *anchorv1.Receipt) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketPending).Delete([]byte(r.GetKey())); err != nil {
			return err
		}
		bk := tx.Bucket(bucketReceipts)
		seq, err := bk.NextSequence()
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		return bk.Put(k[:], b)
	})
}

// DropPending forgets a pending receipt the witnesses will never accept.
func (s *Store) DropPending(key string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPending).Delete([]byte(key)) })
}
