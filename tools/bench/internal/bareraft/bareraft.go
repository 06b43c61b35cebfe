// Package bareraft is the baseline of B11: a plain hashicorp/raft cluster
// of separate processes (the harness binary started as `bench raft-node`),
// each with stock settings — raft.DefaultConfig, raft-boltdb/v2 as log and
// stable store, file snapshots, the plain TCP transport — and a state
// machine that only counts what it applies. What the witness does on top
// (mutual TLS, the Connect API, protobuf, its state machine, its own Raft
// settings) is what B11's ratios show.
//
// The leader runs the load itself: raft.Apply back to back from a number
// of goroutines, each call's latency from Apply to the future's answer
// (quorum commit, then applied by the leader's state machine), and sends
// the calls back to the harness over a plain-HTTP control endpoint on
// loopback.
package bareraft

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/witnz/witnz/tools/bench/internal/closedloop"
	"github.com/witnz/witnz/tools/bench/internal/logrepl"
)

// Command is the first argument that makes the harness binary a node.
const Command = "raft-node"

// applyTimeout bounds one raft.Apply of the load.
const applyTimeout = 10 * time.Second

// Serve runs one node until ctx ends: `bench raft-node --id ID --dir DIR
// --raft HOST:PORT --control HOST:PORT --peer ID=HOST:PORT ...
// [--bootstrap]`. Raft's log goes to logOut.
func Serve(ctx context.Context, args []string, logOut io.Writer) error {
	fs := flag.NewFlagSet(Command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	id := fs.String("id", "", "node id")
	dir := fs.String("dir", "", "data directory")
	raftAddr := fs.String("raft", "", "host:port of the Raft transport")
	control := fs.String("control", "", "host:port of the control endpoint")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap the cluster from --peer")
	var peers []string
	fs.Func("peer", "ID=HOST:PORT of a voter, every voter including this one", func(s string) error {
		peers = append(peers, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", Command, err)
	}
	if *id == "" || *dir == "" || *raftAddr == "" || *control == "" || len(peers) == 0 {
		return fmt.Errorf("%s: --id, --dir, --raft, --control and --peer are required", Command)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(*dir, "raft.db"))
	if err != nil {
		return fmt.Errorf("open raft.db: %w", err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStore(*dir, 2, logOut)
	if err != nil {
		return err
	}
	addr, err := net.ResolveTCPAddr("tcp", *raftAddr)
	if err != nil {
		return err
	}
	trans, err := raft.NewTCPTransport(*raftAddr, addr, 3, 10*time.Second, logOut)
	if err != nil {
		return err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(*id)
	rc.LogOutput, rc.LogLevel = logOut, "INFO"
	f := &counter{}
	r, err := raft.NewRaft(rc, f, store, store, snaps, trans)
	if err != nil {
		trans.Close()
		return err
	}
	defer func() { _ = r.Shutdown().Error() }()
	if *bootstrap {
		var servers []raft.Server
		for _, p := range peers {
			pid, paddr, ok := strings.Cut(p, "=")
			if !ok {
				return fmt.Errorf("%s: --peer %q is not ID=HOST:PORT", Command, p)
			}
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(pid), Address: raft.ServerAddress(paddr)})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		_, leader := r.LeaderWithID()
		writeJSON(w, State{State: r.State().String(), Leader: string(leader), Applied: f.entries.Load()})
	})
	mux.HandleFunc("POST /load", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		size, err1 := strconv.Atoi(q.Get("bytes"))
		callers, err2 := strconv.Atoi(q.Get("callers"))
		ms, err3 := strconv.Atoi(q.Get("millis"))
		if err := errors.Join(err1, err2, err3); err != nil || size <= 0 || callers <= 0 || ms <= 0 {
			http.Error(w, "want positive bytes, callers and millis", http.StatusBadRequest)
			return
		}
		if r.State() != raft.Leader {
			http.Error(w, "not the leader", http.StatusConflict)
			return
		}
		payload := make([]byte, size)
		_, _ = rand.Read(payload)
		res := closedloop.Run(req.Context(), callers, time.Duration(ms)*time.Millisecond, func(context.Context, int, int) error {
			return r.Apply(payload, applyTimeout).Error()
		})
		writeJSON(w, res.ToWire())
	})
	mux.HandleFunc("POST /follow", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		ms, err := strconv.Atoi(q.Get("millis"))
		if err != nil || ms <= 0 || q.Get("dsn") == "" || q.Get("slot") == "" || q.Get("pub") == "" {
			http.Error(w, "want dsn, slot, pub and positive millis", http.StatusBadRequest)
			return
		}
		if r.State() != raft.Leader {
			http.Error(w, "not the leader", http.StatusConflict)
			return
		}
		lat, err := follow(req.Context(), r, q.Get("dsn"), q.Get("slot"), q.Get("pub"), time.Duration(ms)*time.Millisecond)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, lat)
	})
	ln, err := net.Listen("tcp", *control)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// EntryBytes is the size of one logged row in a Raft entry, as in the
// witness's Append of one row.
const EntryBytes = 107

// FollowedCommit is one transaction followed by POST /follow: its commit
// timestamp and when the Raft entry holding it was applied on the leader,
// in Unix nanoseconds.
type FollowedCommit struct {
	Commit  int64 `json:"commit"`
	Applied int64 `json:"applied"`
}

// follow streams a slot for d and logs every transaction with rows into
// Raft the way cdc-ingest batches them while the quorum answers quickly:
// one Apply in flight, and each next Apply carries every transaction that
// arrived meanwhile (EntryBytes per row).
func follow(ctx context.Context, r *raft.Raft, dsn, slot, pub string, d time.Duration) ([]FollowedCommit, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu       sync.Mutex
		queued   []logrepl.Commit
		wake     = make(chan struct{}, 1)
		out      []FollowedCommit
		applyErr error
	)
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		for {
			select {
			case <-wake:
			case <-ctx.Done():
				return
			}
			mu.Lock()
			batch := queued
			queued = nil
			mu.Unlock()
			if len(batch) == 0 {
				continue
			}
			rows := 0
			for _, c := range batch {
				rows += c.Rows
			}
			payload := make([]byte, rows*EntryBytes)
			_, _ = rand.Read(payload)
			if err := r.Apply(payload, applyTimeout).Error(); err != nil {
				applyErr = err
				cancel()
				return
			}
			now := time.Now().UnixNano()
			for _, c := range batch {
				out = append(out, FollowedCommit{Commit: c.CommitTime.UnixNano(), Applied: now})
			}
		}
	}()
	err := logrepl.Consume(ctx, dsn, slot, pub, func(c logrepl.Commit) {
		if c.Rows == 0 {
			return
		}
		mu.Lock()
		queued = append(queued, c)
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	cancel()
	<-applied
	if applyErr != nil {
		return nil, fmt.Errorf("raft apply: %w", applyErr)
	}
	return out, err
}

// State is a node's answer to GET /state.
type State struct {
	State   string `json:"state"`
	Leader  string `json:"leader"`
	Applied uint64 `json:"applied_entries"`
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// counter is the trivial state machine: it counts entries and bytes.
type counter struct {
	entries, bytes atomic.Uint64
}

func (c *counter) Apply(l *raft.Log) any {
	c.entries.Add(1)
	c.bytes.Add(uint64(len(l.Data)))
	return nil
}

func (c *counter) Snapshot() (raft.FSMSnapshot, error) {
	return countSnapshot{c.entries.Load(), c.bytes.Load()}, nil
}

func (c *counter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [16]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	c.entries.Store(binary.BigEndian.Uint64(b[:8]))
	c.bytes.Store(binary.BigEndian.Uint64(b[8:]))
	return nil
}

type countSnapshot struct{ entries, bytes uint64 }

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s.entries)
	binary.BigEndian.PutUint64(b[8:], s.bytes)
	if _, err := sink.Write(b[:]); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}
