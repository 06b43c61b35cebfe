// Package history keeps the result of every verification run — time,
// table, snapshot position, rows, duration, outcome and findings — so the
// dashboard and operators can see when each table was last proven clean.
//
// Runs are stored in a bbolt file, one record per run keyed by its start
// time, encoded as witnz.verifier.v1.VerifyResponse. Without a file (no
// --data-dir) they are kept in memory, the newest MemoryLimit only.
package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

// FileName is the store's file inside the data directory.
const FileName = "history.db"

// MemoryLimit bounds the runs an in-memory store keeps.
const MemoryLimit = 10_000

var (
	runsBucket        = []byte("runs")
	checkpointsBucket = []byte("checkpoints")
)

// Checkpoint is the last cosigned checkpoint of a table the verifier
// accepted; the next one must extend it.
type Checkpoint struct {
	Size uint64
	Root [32]byte
	Note []byte
}

// Store keeps verification runs. It is safe for concurrent use.
type Store struct {
	db *bolt.DB // nil: in memory

	mu     sync.Mutex
	mem    []*verifierv1.VerifyResponse
	memCPs map[string]Checkpoint
	last   int64 // last key time, to keep keys increasing
}

// Open opens (creating if needed) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("history %s is locked by another process: is another verifier using --data-dir %s?", path, dir)
		}
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(runsBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(checkpointsBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open history %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Memory returns a store that keeps the newest MemoryLimit runs in memory.
func Memory() *Store { return &Store{} }

// Persistent reports whether runs survive a restart.
func (s *Store) Persistent() bool { return s.db != nil }

// Close closes the file.
func (s *Store) Close() error {
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

// Add records a run.
func (s *Store) Add(run *verifierv1.VerifyResponse) error {
	run = proto.CloneOf(run)
	if s.db == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.mem = append(s.mem, run)
		if len(s.mem) > MemoryLimit {
			s.mem = append(s.mem[:0:0], s.mem[len(s.mem)-MemoryLimit:]...)
		}
		return nil
	}
	val, err := proto.Marshal(run)
	if err != nil {
		return err
	}
	s.mu.Lock()
	t := run.GetStartedAt().AsTime().UnixNano()
	if t <= s.last {
		t = s.last + 1
	}
	s.last = t
	s.mu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(runsBucket)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(t)), seq)
		return b.Put(key, val)
	})
}

// List returns up to limit runs of table ("" for every table), newest
// first.
func (s *Store) List(table string, limit int) ([]*verifierv1.VerifyResponse, error) {
	var out []*verifierv1.VerifyResponse
	if s.db == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i := len(s.mem) - 1; i >= 0 && len(out) < limit; i-- {
			if table == "" || s.mem[i].GetTable() == table {
				out = append(out, proto.CloneOf(s.mem[i]))
			}
		}
		return out, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(runsBucket).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			run := &verifierv1.VerifyResponse{}
			if err := proto.Unmarshal(v, run); err != nil {
				return fmt.Errorf("history record %x: %w", k, err)
			}
			if table == "" || run.GetTable() == table {
				out = append(out, run)
			}
		}
		return nil
	})
	return out, err
}

// LastCheckpoint returns the checkpoint of table saved last.
func (s *Store) LastCheckpoint(table string) (Checkpoint, bool, error) {
	if s.db == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		cp, ok := s.memCPs[table]
		return cp, ok, nil
	}
	var cp Checkpoint
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(checkpointsBucket).Get([]byte(table))
		if v == nil {
			return nil
		}
		if len(v) < 40 {
			return fmt.Errorf("history: the checkpoint record of %s is %d bytes, want at least 40", table, len(v))
		}
		cp.Size = binary.BigEndian.Uint64(v)
		copy(cp.Root[:], v[8:40])
		cp.Note = append([]byte(nil), v[40:]...)
		ok = true
		return nil
	})
	return cp, ok, err
}

// SaveCheckpoint records cp as the last checkpoint of table: size (8
// bytes, big-endian), root (32 bytes), signed note.
func (s *Store) SaveCheckpoint(table string, cp Checkpoint) error {
	if s.db == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.memCPs == nil {
			s.memCPs = map[string]Checkpoint{}
		}
		cp.Note = append([]byte(nil), cp.Note...)
		s.memCPs[table] = cp
		return nil
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 40+len(cp.Note)), cp.Size)
	v = append(append(v, cp.Root[:]...), cp.Note...)
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(checkpointsBucket).Put([]byte(table), v)
	})
}
