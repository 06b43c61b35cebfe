package tlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/bbolt"
)

// Layout of a DB file (docs/design/0006-log-storage.md):
//
//	bucket "witnz.tlog.v1"
//	  bucket <log name>
//	    "meta"        state record, below
//	    bucket "nodes"
//	      level uint8 || index uint64 (big-endian) → tile of 62 hashes
//
// A tile holds five levels of a 32-leaf-wide subtree; its key is the level
// and index of its first node (boltstore.go).
//
// The state record (integers big-endian):
//
//	magic      "wztm"
//	version    uint32 = 1
//	size       uint64
//	root       32 bytes   RFC 6962 root at size
//	chain head 32 bytes   c_size
//	checksum   32 bytes   SHA-256 of everything before it
//
// Every append batch writes its nodes and the new state record in one
// transaction.
var (
	rootBucket  = []byte("witnz.tlog.v1")
	metaKey     = []byte("meta")
	nodesBucket = []byte("nodes")
	metaMagic   = [4]byte{'w', 'z', 't', 'm'}
)

const (
	metaVersion = 1
	metaSize    = 4 + 4 + 8 + 3*HashSize
	nodeKeySize = 1 + 8
	// MaxLogName bounds the length of a log name in bytes.
	MaxLogName = 1024
)

// lockTimeout is how long OpenDB waits for another process to let go of
// the file.
var lockTimeout = 2 * time.Second

// Errors of a DB.
var (
	// ErrClosed is wrapped by the errors of a log whose DB was closed or
	// that was deleted, and of a closed DB.
	ErrClosed = errors.New("database is closed")
	// ErrLocked is returned by OpenDB when another process has the file
	// open.
	ErrLocked = errors.New("database file is in use by another process")
)

// DB is a bbolt file holding any number of logs, each under its own name.
// Every append to one of its logs is durable when it returns, and a log
// reopened after a crash is exactly as its last successful append left it.
// A DB is safe for concurrent use.
type DB struct {
	bolt   *bbolt.DB
	closed atomic.Bool

	mu   sync.Mutex
	logs map[string]*Log
}

// OpenDB opens the DB file at path, creating it if it does not exist. Only
// one process may have a file open at a time: OpenDB waits a little for
// another to let go, then fails with ErrLocked.
func OpenDB(path string) (*DB, error) {
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bbolt.FreelistMapType,
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("tlog: open %s: %w (waited %s)", path, ErrLocked, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: open %s: %w", path, err)
	}
	err = b.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(rootBucket)
		return err
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("tlog: open %s: %w", path, err)
	}
	return &DB{bolt: b, logs: map[string]*Log{}}, nil
}

// Close closes the file. Logs of the DB keep answering Size, Root and
// State from memory; everything that needs the file fails with ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.closed.Store(true)
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("tlog: close %s: %w", db.bolt.Path(), err)
	}
	return nil
}

// Path is the DB file's path.
func (db *DB) Path() string { return db.bolt.Path() }

// Log returns the log called name, creating an empty one if the file has
// none. Opening an existing log reads its state record and the last tile
// of each row of the tree, O(log n) in all, and checks them against each
// other: a damaged state record, a missing tile or nodes beyond the
// recorded size give an error wrapping ErrCorrupt. (Verify checks the
// whole log.) Calls with the same name return the same *Log.
func (db *DB) Log(name string) (*Log, error) {
	if name == "" || len(name) > MaxLogName {
		return nil, fmt.Errorf("tlog: log name of %d bytes, want 1 to %d", len(name), MaxLogName)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if l, ok := db.logs[name]; ok {
		return l, nil
	}
	var exists bool
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		exists = tx.Bucket(rootBucket).Bucket([]byte(name)) != nil
		return nil
	})
	var l *Log
	switch {
	case err == nil && exists:
		l, err = loadLog(db, name)
	case err == nil:
		err = db.bolt.Update(func(tx *bbolt.Tx) error {
			b, err := tx.Bucket(rootBucket).CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if _, err := b.CreateBucket(nodesBucket); err != nil {
				return err
			}
			l = newLog(newBoltStore(db, name))
			return b.Put(metaKey, encodeMeta(l.stateLocked()))
		})
	}
	if err != nil {
		return nil, fmt.Errorf("tlog: log %q: %w", name, boltErr(err))
	}
	db.logs[name] = l
	return l, nil
}

// DeleteLog removes the log called name and all its nodes from the file,
// in one transaction. A *Log of that name obtained before fails with
// ErrClosed from then on, except for Size, Root and State; Log(name)
// creates a new, empty log. Deleting a log the file does not have is not
// an error.
func (db *DB) DeleteLog(name string) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if l, ok := db.logs[name]; ok {
		// Wait for the log's current operation, then cut it off.
		l.mu.Lock()
		l.store.(*boltStore).deleted.Store(true)
		l.mu.Unlock()
		delete(db.logs, name)
	}
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		err := tx.Bucket(rootBucket).DeleteBucket([]byte(name))
		if errors.Is(err, bbolt.ErrBucketNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("tlog: delete log %q: %w", name, boltErr(err))
	}
	return nil
}

// LogNames lists the logs of the file in byte order of their names.
func (db *DB) LogNames() ([]string, error) {
	var names []string
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(rootBucket).ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("tlog: list logs: %w", boltErr(err))
	}
	return names, nil
}

// loadLog rebuilds a log from its bucket: the state record, the tails of
// the tile rows (checking that every row ends where the size says), and the
// compact range from the stored nodes it names, which must give the
// recorded root.
func loadLog(db *DB, name string) (*Log, error) {
	store := newBoltStore(db, name)
	var st State
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		_, nodes, err := store.buckets(tx)
		if err != nil {
			return err
		}
		if st, err = decodeMeta(tx.Bucket(rootBucket).Bucket([]byte(name)).Get(metaKey)); err != nil {
			return err
		}
		return store.load(nodes, st.Size)
	})
	if err != nil {
		return nil, err
	}
	hashes, err := store.get(compact.RangeNodes(0, st.Size, nil))
	if err != nil {
		return nil, err
	}
	if root := foldRoot(hashes); !bytes.Equal(root, st.Root[:]) {
		return nil, fmt.Errorf("%w: stored nodes give root %x at size %d, state record says %x", ErrCorrupt, root, st.Size, st.Root)
	}
	l := newLog(store)
	if l.rng, err = l.factory.NewRange(0, st.Size, hashes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	l.chain, l.root, l.rootSize = st.ChainHead, st.Root, st.Size
	return l, nil
}

func encodeMeta(st State) []byte {
	b := make([]byte, 0, metaSize)
	b = append(b, metaMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, metaVersion)
	b = binary.BigEndian.AppendUint64(b, st.Size)
	b = append(b, st.Root[:]...)
	b = append(b, st.ChainHead[:]...)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

func decodeMeta(b []byte) (State, error) {
	var st State
	switch {
	case b == nil:
		return st, fmt.Errorf("%w: no state record", ErrCorrupt)
	case len(b) != metaSize:
		return st, fmt.Errorf("%w: state record of %d bytes, want %d", ErrCorrupt, len(b), metaSize)
	case !bytes.Equal(b[:4], metaMagic[:]):
		return st, fmt.Errorf("%w: state record magic %q, want %q", ErrCorrupt, b[:4], metaMagic[:])
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != metaVersion {
		return st, fmt.Errorf("%w: state record version %d, want %d", ErrCorrupt, v, metaVersion)
	}
	body := b[:metaSize-HashSize]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], b[len(body):]) {
		return st, fmt.Errorf("%w: state record checksum mismatch", ErrCorrupt)
	}
	st.Size = binary.BigEndian.Uint64(b[8:])
	copy(st.Root[:], b[16:])
	copy(st.ChainHead[:], b[16+HashSize:])
	return st, nil
}

// boltErr maps bbolt's "not open" to ErrClosed.
func boltErr(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
