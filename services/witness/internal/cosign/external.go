package cosign

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
)

// External witnesses: after the cluster's own quorum cosigned a
// checkpoint, the leader asks every configured external witness to cosign
// it too, over C2SP tlog-witness add-checkpoint
// (https://c2sp.org/tlog-witness): the log-signed checkpoint, the size
// that witness last cosigned for the origin, and a consistency proof from
// it. A witness that cosigned another size answers 409 with that size;
// the leader retries once from it. The returned cosignature line, verified
// with the witness's key, joins the note before Policy.Verify, so a policy
// may require external witnesses in its k-of-n.

// ExternalWitness is a C2SP tlog-witness the leader asks to cosign.
type ExternalWitness struct {
	// Name labels the witness in logs.
	Name string
	// URL is the witness's prefix; requests go to URL/add-checkpoint.
	URL string
	// Verifier checks its cosignatures (a type 0x04 cosignature key).
	Verifier note.Verifier
}

// ErrExternalWitness is wrapped by the failures of an external witness.
var ErrExternalWitness = errors.New("external witness")

// maxExternalAnswer bounds an add-checkpoint answer.
const maxExternalAnswer = 64 << 10

// externalSizes remembers, per witness and origin, the size the witness
// last cosigned (what the next request's old size is).
type externalSizes struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (s *externalSizes) get(name, origin string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name+"\x00"+origin]
}

func (s *externalSizes) set(name, origin string, size uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]uint64{}
	}
	s.m[name+"\x00"+origin] = size
}

// conflictError is a 409 answer: the witness cosigned size before.
type conflictError struct{ size uint64 }

func (e *conflictError) Error() string {
	return fmt.Sprintf("the witness last cosigned size %d", e.size)
}

// proofFunc returns a consistency proof of the table's log from one size
// to another.
type proofFunc func(from, to uint64) ([][]byte, error)

// askExternal has witness w cosign the log-signed checkpoint signed (of
// cp), resyncing once on 409. It returns the witness's cosignature.
func (c *Coordinator) askExternal(ctx context.Context, w ExternalWitness, cp checkpoint.Checkpoint, signed []byte, proof proofFunc) (note.Signature, error) {
	old := c.ext.get(w.Name, cp.Origin)
	if old > cp.Size {
		old = 0
	}
	for attempt := 0; ; attempt++ {
		sig, err := c.postCheckpoint(ctx, w, cp, signed, old, proof)
		var conflict *conflictError
		if errors.As(err, &conflict) && attempt == 0 {
			if conflict.size > cp.Size {
				return note.Signature{}, fmt.Errorf("%w %s cosigned %s at size %d, beyond this checkpoint's %d: this cluster's log is behind what the witness saw", ErrExternalWitness, w.Name, cp.Origin, conflict.size, cp.Size)
			}
			c.cfg.Log.Info("external witness answered 409: resending from the size it last cosigned", "witness", w.Name, "origin", cp.Origin, "sent_old_size", old, "witness_size", conflict.size)
			old = conflict.size
			continue
		}
		if err != nil {
			return note.Signature{}, err
		}
		c.ext.set(w.Name, cp.Origin, cp.Size)
		return sig, nil
	}
}

func (c *Coordinator) postCheckpoint(ctx context.Context, w ExternalWitness, cp checkpoint.Checkpoint, signed []byte, old uint64, proof proofFunc) (note.Signature, error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	if old > 0 && old < cp.Size {
		hashes, err := proof(old, cp.Size)
		if err != nil {
			return note.Signature{}, fmt.Errorf("consistency proof from %d to %d: %w", old, cp.Size, err)
		}
		for _, h := range hashes {
			body.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
		}
	}
	body.WriteString("\n")
	body.Write(signed)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(w.URL, "/")+AddCheckpointPath, &body)
	if err != nil {
		return note.Signature{}, fmt.Errorf("%w %s: %v", ErrExternalWitness, w.Name, err)
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return note.Signature{}, fmt.Errorf("%w %s: %v", ErrExternalWitness, w.Name, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxExternalAnswer))
	if err != nil {
		return note.Signature{}, fmt.Errorf("%w %s: reading the answer: %v", ErrExternalWitness, w.Name, err)
	}
	switch {
	case resp.StatusCode == http.StatusConflict && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/x.tlog.size"):
		n, err := strconv.ParseUint(strings.TrimSpace(string(answer)), 10, 64)
		if err != nil {
			return note.Signature{}, fmt.Errorf("%w %s: 409 with a malformed size %q", ErrExternalWitness, w.Name, answer)
		}
		return note.Signature{}, &conflictError{size: n}
	case resp.StatusCode != http.StatusOK:
		return note.Signature{}, fmt.Errorf("%w %s answered %s: %s", ErrExternalWitness, w.Name, resp.Status, strings.TrimSpace(string(answer)))
	}
	// The answer holds one or more cosignature lines; the one by the
	// witness's key counts.
	for line := range strings.SplitSeq(strings.TrimRight(string(answer), "\n"), "\n") {
		sig, err := ParseSignatureLine(cp, line)
		if err != nil || sig.Name != w.Verifier.Name() || sig.Hash != w.Verifier.KeyHash() {
			continue
		}
		one, err := checkpoint.Assemble(cp, sig)
		if err != nil {
			continue
		}
		if _, _, err := checkpoint.Open(one, note.VerifierList(w.Verifier)); err != nil {
			return note.Signature{}, fmt.Errorf("%w %s: its cosignature does not verify with its key: %v", ErrExternalWitness, w.Name, err)
		}
		return sig, nil
	}
	return note.Signature{}, fmt.Errorf("%w %s: the answer has no cosignature by its key %s", ErrExternalWitness, w.Name, w.Verifier.Name())
}
