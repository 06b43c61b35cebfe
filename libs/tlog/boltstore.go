package tlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/transparency-dev/merkle/compact"
	"go.etcd.io/bbolt"
)

// Nodes are stored in tiles: a tile is the perfect subtree of tileHeight
// levels above tileWidth nodes of a level that is a multiple of tileHeight
// (a tile row), without its root, which belongs to the next row. A tile
// holds its levels bottom first, each left to right:
//
//	level 5r     32 hashes
//	level 5r+1   16 hashes
//	level 5r+2    8 hashes
//	level 5r+3    4 hashes
//	level 5r+4    2 hashes
//
// 62 hashes, 1984 bytes, two to a bbolt page. Slots of nodes the tree does
// not have yet are zero. The key of a tile is the level and index of its
// first node. An inclusion or consistency proof in a tree of 2^20 leaves
// reads 4 tiles, and a batch of 4096 leaves writes about 140.
const (
	tileHeight = 5
	tileWidth  = 1 << tileHeight
	tileNodes  = 2*tileWidth - 2
	tileBytes  = tileNodes * HashSize
	// maxRows is the number of tile rows a tree of up to 2^64 leaves uses.
	maxRows = 64/tileHeight + 1
	// scanChunk is how many leaves one read transaction of a scan covers,
	// so that a long scan does not hold the file's mapping for its whole
	// run.
	scanChunk = 1 << 16
)

// sectionOff is the slot of the first node of each level of a tile.
var sectionOff = [tileHeight]int{0, 32, 48, 56, 60}

// tilePos returns the tile row and index of node id and its slot in the
// tile.
func tilePos(id compact.NodeID) (row uint, tile uint64, slot int) {
	row, j := id.Level/tileHeight, id.Level%tileHeight
	shift := tileHeight - j
	return row, id.Index >> shift, sectionOff[j] + int(id.Index&(1<<shift-1))
}

// tileKey is the key of a tile: level and index of its first node.
func tileKey(row uint, tile uint64) []byte {
	return appendNodeKey(make([]byte, 0, nodeKeySize), compact.NewNodeID(row*tileHeight, tile<<tileHeight))
}

func appendNodeKey(dst []byte, id compact.NodeID) []byte {
	return binary.BigEndian.AppendUint64(append(dst, byte(id.Level)), id.Index)
}

// tileFill returns how many nodes of each level of tile of row the tree of
// size leaves has.
func tileFill(size uint64, row uint, tile uint64) (fill [tileHeight]int) {
	for j := range uint(tileHeight) {
		level := row*tileHeight + j
		if level >= 64 {
			break
		}
		width := uint64(tileWidth >> j)
		first := tile * width
		if n := size >> level; n > first {
			fill[j] = int(min(n-first, width))
		}
	}
	return fill
}

// tail is the last, incomplete tile of a row, kept in memory.
type tail struct {
	tile uint64
	buf  []byte // tileBytes
}

type doneTile struct{ key, buf []byte }

// boltStore keeps one log's nodes in its bucket of a DB file. The last,
// incomplete tile of every row lives in memory as well; nodes put during a
// batch fill those and reach the file, with the state record, in the
// batch's one transaction. Other nodes are read from the file.
type boltStore struct {
	db      *bbolt.DB
	closed  *atomic.Bool // set when the DB is closed
	deleted atomic.Bool  // set when the log is deleted
	name    []byte

	tails     []tail
	committed []tail     // tails as of the last commit, for discard
	done      []doneTile // tiles completed since the last commit
	touched   uint32     // rows put to since the last commit
	free      [][]byte
	cache     tileCache

	// failCommit, when set, runs inside the commit transaction after the
	// tiles are written; an error aborts the transaction. Tests use it to
	// stop a batch half way.
	failCommit func() error
}

func newBoltStore(db *DB, name string) *boltStore {
	return &boltStore{db: db.bolt, closed: &db.closed, name: []byte(name)}
}

func (s *boltStore) buckets(tx *bbolt.Tx) (log, nodes *bbolt.Bucket, err error) {
	if log = tx.Bucket(rootBucket).Bucket(s.name); log != nil {
		nodes = log.Bucket(nodesBucket)
	}
	if nodes == nil {
		return nil, nil, fmt.Errorf("%w: log %q is gone from %s", ErrCorrupt, s.name, s.db.Path())
	}
	return log, nodes, nil
}

func (s *boltStore) usable() error {
	switch {
	case s.closed.Load():
		return ErrClosed
	case s.deleted.Load():
		return fmt.Errorf("%w: log %q was deleted", ErrClosed, s.name)
	}
	return nil
}

func (s *boltStore) newTile() []byte {
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free = s.free[:n-1]
		clear(b)
		return b
	}
	return make([]byte, tileBytes)
}

func (s *boltStore) put(id compact.NodeID, hash []byte) error {
	if len(hash) != HashSize {
		return fmt.Errorf("node %d/%d: hash of %d bytes", id.Level, id.Index, len(hash))
	}
	row, tile, slot := tilePos(id)
	for uint(len(s.tails)) <= row {
		s.tails = append(s.tails, tail{buf: s.newTile()})
		s.committed = append(s.committed, tail{buf: make([]byte, tileBytes)})
	}
	t := &s.tails[row]
	if tile != t.tile {
		return fmt.Errorf("node %d/%d stored out of order (tile %d of row %d is being filled)", id.Level, id.Index, t.tile, row)
	}
	copy(t.buf[slot*HashSize:], hash)
	s.touched |= 1 << row
	if slot == tileNodes-1 {
		s.done = append(s.done, doneTile{tileKey(row, tile), t.buf})
		t.tile, t.buf = tile+1, s.newTile()
	}
	return nil
}

func (s *boltStore) commit(st State) error {
	if err := s.usable(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bbolt.Tx) error {
		log, nodes, err := s.buckets(tx)
		if err != nil {
			return err
		}
		// Tiles only ever go at the end of their row: full pages waste
		// nothing.
		nodes.FillPercent = 1
		for _, d := range s.done {
			if err := nodes.Put(d.key, d.buf); err != nil {
				return err
			}
		}
		for row, t := range s.tails {
			// An empty tail is a tile the tree has no node of yet.
			if s.touched&(1<<row) != 0 && t.tile<<tileHeight < st.Size>>(uint(row)*tileHeight) {
				if err := nodes.Put(tileKey(uint(row), t.tile), t.buf); err != nil {
					return err
				}
			}
		}
		if s.failCommit != nil {
			if err := s.failCommit(); err != nil {
				return err
			}
		}
		return log.Put(metaKey, encodeMeta(st))
	})
	if err != nil {
		return boltErr(err)
	}
	for row := range s.tails {
		if s.touched&(1<<row) != 0 {
			s.committed[row].tile = s.tails[row].tile
			copy(s.committed[row].buf, s.tails[row].buf)
		}
	}
	s.reset()
	return nil
}

func (s *boltStore) discard() {
	for row := range s.tails {
		if s.touched&(1<<row) != 0 {
			s.tails[row].tile = s.committed[row].tile
			copy(s.tails[row].buf, s.committed[row].buf)
		}
	}
	s.reset()
}

func (s *boltStore) reset() {
	for _, d := range s.done {
		s.free = append(s.free, d.buf)
	}
	clear(s.done)
	s.done, s.touched = s.done[:0], 0
}

// load reads the tails of a log of size leaves from its nodes bucket,
// checking that every row ends where the size says: its last tile is there,
// has no node beyond the size, and nothing follows it.
func (s *boltStore) load(nodes *bbolt.Bucket, size uint64) error {
	c := nodes.Cursor()
	for row := uint(0); ; row++ {
		n := uint64(0)
		if row*tileHeight < 64 {
			n = size >> (row * tileHeight)
		}
		if n == 0 {
			if k, _ := c.Seek(tileKey(row, 0)); k != nil {
				return fmt.Errorf("%w: tile %x stored above a tree of %d leaves", ErrCorrupt, k, size)
			}
			return nil
		}
		tiles := (n + tileWidth - 1) / tileWidth
		last := tiles - 1
		v := nodes.Get(tileKey(row, last))
		if len(v) != tileBytes {
			return fmt.Errorf("%w: last tile %d of row %d of a tree of %d leaves has %d bytes, want %d", ErrCorrupt, last, row, size, len(v), tileBytes)
		}
		// A tile's slots hold the nodes the tree has, then zeros.
		for j, f := range tileFill(size, row, last) {
			for i := range tileWidth >> j {
				h := v[(sectionOff[j]+i)*HashSize:][:HashSize]
				if have := i < f; have == allZero(h) {
					what := "lacks node"
					if !have {
						what = "holds node beyond the tree at"
					}
					return fmt.Errorf("%w: tile %d of row %d of a tree of %d leaves %s level %d index %d",
						ErrCorrupt, last, row, size, what, row*tileHeight+uint(j), last*uint64(tileWidth>>j)+uint64(i))
				}
			}
		}
		k, _ := c.Seek(tileKey(row, tiles))
		if k != nil && !bytes.Equal(k, tileKey(row+1, 0)) {
			return fmt.Errorf("%w: tile %x stored beyond row %d of a tree of %d leaves", ErrCorrupt, k, row, size)
		}
		t := tail{tile: last, buf: bytes.Clone(v)}
		if n%tileWidth == 0 {
			t = tail{tile: tiles, buf: make([]byte, tileBytes)}
		}
		s.tails = append(s.tails, t)
		s.committed = append(s.committed, tail{tile: t.tile, buf: bytes.Clone(t.buf)})
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (s *boltStore) get(ids []compact.NodeID) ([][]byte, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	buf := make([]byte, len(ids)*HashSize)
	out := make([][]byte, len(ids))
	// Nodes in the tails and cached tiles come from memory, the others
	// from the file.
	missing := false
	for i, id := range ids {
		out[i] = buf[i*HashSize : (i+1)*HashSize : (i+1)*HashSize]
		row, tile, slot := tilePos(id)
		if t := s.memTile(row, tile); t != nil {
			copy(out[i], t[slot*HashSize:])
		} else {
			out[i] = out[i][:0]
			missing = true
		}
	}
	if !missing {
		return out, nil
	}
	err := s.db.View(func(tx *bbolt.Tx) error {
		_, nodes, err := s.buckets(tx)
		if err != nil {
			return err
		}
		var (
			key      [nodeKeySize]byte
			lastRow  = ^uint(0)
			lastTile uint64
			v        []byte
		)
		for i, id := range ids {
			if len(out[i]) != 0 {
				continue
			}
			row, tile, slot := tilePos(id)
			if row != lastRow || tile != lastTile {
				lastRow, lastTile = row, tile
				v = nodes.Get(appendNodeKey(key[:0], compact.NewNodeID(row*tileHeight, tile<<tileHeight)))
				if len(v) != tileBytes {
					return fmt.Errorf("%w: tile %d of row %d has %d bytes, want %d", ErrCorrupt, tile, row, len(v), tileBytes)
				}
				if row > 0 {
					s.cache.add(row, tile, v)
				}
			}
			out[i] = out[i][:HashSize]
			copy(out[i], v[slot*HashSize:])
		}
		return nil
	})
	if err != nil {
		return nil, boltErr(err)
	}
	return out, nil
}

// memTile returns the tile if it is a tail or cached, else nil.
func (s *boltStore) memTile(row uint, tile uint64) []byte {
	if row < uint(len(s.tails)) && s.tails[row].tile == tile {
		return s.tails[row].buf
	}
	if row > 0 {
		return s.cache.get(row, tile)
	}
	return nil
}

// cacheTiles bounds the tiles a log keeps cached: 512 KiB.
const cacheTiles = 256

// tileCache keeps complete tiles above the leaves, which every proof walks
// through. Complete tiles never change, so a cached tile is never stale.
// Once the cache is full, a tile goes in only in place of one of a lower
// row: the few tiles near the top of the tree stay, and a lower row does
// not churn through the cache copying tiles that are dropped again soon.
type tileCache struct {
	mu    sync.Mutex
	tiles map[tileID][]byte
}

type tileID struct {
	row  uint
	tile uint64
}

func (c *tileCache) get(row uint, tile uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tiles[tileID{row, tile}]
}

func (c *tileCache) add(row uint, tile uint64, v []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tiles == nil {
		c.tiles = make(map[tileID][]byte)
	}
	if len(c.tiles) >= cacheTiles {
		for k := range c.tiles { // an arbitrary tile
			if k.row >= row {
				return
			}
			delete(c.tiles, k)
			break
		}
	}
	c.tiles[tileID{row, tile}] = bytes.Clone(v)
}

func (s *boltStore) leaves(from, to uint64, fn func(uint64, []byte) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	for from < to {
		end := min(to, from+scanChunk)
		err := s.db.View(func(tx *bbolt.Tx) error {
			_, nodes, err := s.buckets(tx)
			if err != nil {
				return err
			}
			c := nodes.Cursor()
			tile := from >> tileHeight
			k, v := c.Seek(tileKey(0, tile))
			for i := from; i < end; {
				if !bytes.Equal(k, tileKey(0, tile)) || len(v) != tileBytes {
					return fmt.Errorf("%w: tile %d of leaves missing", ErrCorrupt, tile)
				}
				for ; i < end && i>>tileHeight == tile; i++ {
					off := (i % tileWidth) * HashSize
					if err := fn(i, v[off:off+HashSize]); err != nil {
						return err
					}
				}
				k, v = c.Next()
				tile++
			}
			return nil
		})
		if err != nil {
			return boltErr(err)
		}
		from = end
	}
	return nil
}
