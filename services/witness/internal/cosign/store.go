package cosign

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/witnz/witnz/libs/tlog"
)

// Buckets of the store: the origins of this cluster's tables, and the
// external logs cosigned through add-checkpoint.
const (
	BucketTables = "tables"
	BucketLogs   = "logs"
)

// StoreFile is the store's file name in the data directory.
const StoreFile = "cosign.db"

// Cosigned is the last checkpoint a node cosigned for one origin.
type Cosigned struct {
	Size uint64
	Root [tlog.HashSize]byte
	// At is when it was cosigned (whole seconds, the cosignature's time).
	At time.Time
}

// Store is this node's durable record of the last checkpoint it cosigned
// per origin: the replay and fork protection of a cosigner. It is local
// to the node (not replicated): it records what this node's key signed,
// whatever the cluster says. Every update is one bbolt transaction,
// fsync'd before the cosignature leaves the node, so the record survives a
// crash or restart.
type Store struct {
	db *bbolt.DB
}

// OpenStore opens (or creates) the store at path.
func OpenStore(path string) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by another witness process (stop it or use another --data-dir)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open the cosigning record %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range []string{BucketTables, BucketLogs} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open the cosigning record %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

const recordSize = 8 + tlog.HashSize + 8

func encodeRecord(c Cosigned) []byte {
	b := make([]byte, 0, recordSize)
	b = binary.BigEndian.AppendUint64(b, c.Size)
	b = append(b, c.Root[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(c.At.Unix()))
}

func decodeRecord(b []byte) (Cosigned, error) {
	if len(b) != recordSize {
		return Cosigned{}, fmt.Errorf("cosigning record of %d bytes, want %d", len(b), recordSize)
	}
	var c Cosigned
	c.Size = binary.BigEndian.Uint64(b)
	copy(c.Root[:], b[8:])
	c.At = time.Unix(int64(binary.BigEndian.Uint64(b[8+tlog.HashSize:])), 0).UTC()
	return c, nil
}

// Last returns the last checkpoint cosigned for origin in bucket; false if
// there is none.
func (s *Store) Last(bucket, origin string) (Cosigned, bool, error) {
	var out Cosigned
	var found bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket([]byte(bucket)).Get([]byte(origin))
		if v == nil {
			return nil
		}
		c, err := decodeRecord(v)
		if err != nil {
			return fmt.Errorf("origin %q: %w", origin, err)
		}
		out, found = c, true
		return nil
	})
	return out, found, err
}

// Advance records next as the last checkpoint cosigned for origin, if
// check, given the current record, returns nil. The check and the write are
// one transaction: two concurrent requests cannot both pass against the
// same old record (C2SP tlog-witness requires it). The write is on disk
// when Advance returns.
func (s *Store) Advance(bucket, origin string, next Cosigned, check func(last Cosigned, ok bool) error) error {
	return s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		var last Cosigned
		v := b.Get([]byte(origin))
		if v != nil {
			var err error
			if last, err = decodeRecord(v); err != nil {
				return fmt.Errorf("origin %q: %w", origin, err)
			}
		}
		if err := check(last, v != nil); err != nil {
			return err
		}
		return b.Put([]byte(origin), encodeRecord(next))
	})
}
