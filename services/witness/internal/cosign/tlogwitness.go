package cosign

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/witnz/witnz/libs/checkpoint"
	"github.com/witnz/witnz/libs/tlog"
)

// AddCheckpointPath is where the C2SP tlog-witness add-checkpoint endpoint
// is served.
const AddCheckpointPath = "/add-checkpoint"

// Limits of an add-checkpoint request.
const (
	maxAddCheckpointBody = 64 << 10
	maxProofLines        = 63
)

// WitnessLog is an external log this node cosigns for: its origin and the
// keys its checkpoints are signed with.
type WitnessLog struct {
	Origin    string
	Verifiers []note.Verifier
}

// ParseWitnessLogs reads a --witness-log file: one log per line,
// "<origin> <log verifier key> [<log verifier key>...]"; '#' starts a
// comment. Keys are Ed25519 note keys (type 0x01).
func ParseWitnessLogs(text []byte) ([]WitnessLog, error) {
	var out []WitnessLog
	sc := bufio.NewScanner(bytes.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("line %d: want `<origin> <log verifier key>...`", n)
		}
		l := WitnessLog{Origin: f[0]}
		for _, k := range f[1:] {
			v, err := checkpoint.NewLogVerifier(k)
			if err != nil {
				return nil, fmt.Errorf("line %d: log %s: %v", n, f[0], err)
			}
			l.Verifiers = append(l.Verifiers, v)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no log in the file: add a line `<origin> <log verifier key>`")
	}
	return out, nil
}

// LoadWitnessLogs reads --witness-log files. An origin may be listed once.
func LoadWitnessLogs(paths []string) ([]WitnessLog, error) {
	var out []WitnessLog
	seen := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("--witness-log: %v", err)
		}
		logs, err := ParseWitnessLogs(b)
		if err != nil {
			return nil, fmt.Errorf("--witness-log %s: %v", p, err)
		}
		for _, l := range logs {
			if prev, dup := seen[l.Origin]; dup {
				return nil, fmt.Errorf("--witness-log %s: log %s is already listed in %s: list each origin once", p, l.Origin, prev)
			}
			seen[l.Origin] = p
			out = append(out, l)
		}
	}
	return out, nil
}

// TLogWitness serves C2SP tlog-witness add-checkpoint
// (https://c2sp.org/tlog-witness) for the configured external logs: it
// verifies the log's signature and the consistency proof from the last
// checkpoint it cosigned for the origin, records the new one durably, and
// answers with its cosignature line.
type TLogWitness struct {
	logs  map[string]note.Verifiers
	key   *checkpoint.Cosigner
	store *Store
	now   func() time.Time
	log   *slog.Logger
}

// NewTLogWitness returns the add-checkpoint handler for logs.
func NewTLogWitness(logs []WitnessLog, key *checkpoint.Cosigner, store *Store, log *slog.Logger) *TLogWitness {
	m := map[string]note.Verifiers{}
	for _, l := range logs {
		m[l.Origin] = note.VerifierList(l.Verifiers...)
	}
	return &TLogWitness{logs: m, key: key, store: store, now: time.Now, log: log}
}

// httpError is an add-checkpoint failure with its status code.
type httpError struct {
	code int
	msg  string
	// size is the latest cosigned size, for 409 Conflict.
	size *uint64
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, format string, args ...any) *httpError {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

func (w *TLogWitness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "add-checkpoint takes a POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxAddCheckpointBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(rw, fmt.Sprintf("request body exceeds %d bytes", maxAddCheckpointBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "cannot read the request body", http.StatusBadRequest)
		return
	}
	line, err := w.AddCheckpoint(body)
	var he *httpError
	switch {
	case errors.As(err, &he) && he.size != nil:
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(he.code)
		fmt.Fprintf(rw, "%d\n", *he.size)
		return
	case errors.As(err, &he):
		http.Error(rw, he.msg, he.code)
		return
	case err != nil:
		w.log.Error("add-checkpoint", "error", err)
		http.Error(rw, "the witness could not record the checkpoint", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(rw, line+"\n")
}

// AddCheckpoint handles one add-checkpoint request body and returns the
// cosignature line, or an *httpError.
func (w *TLogWitness) AddCheckpoint(body []byte) (string, error) {
	old, proof, signed, err := parseAddCheckpoint(body)
	if err != nil {
		return "", fail(http.StatusBadRequest, "%v", err)
	}
	c, _, err := checkpoint.Parse(signed)
	if err != nil {
		return "", fail(http.StatusBadRequest, "checkpoint: %v", err)
	}
	verifiers, ok := w.logs[c.Origin]
	if !ok {
		return "", fail(http.StatusNotFound, "unknown log origin %q", c.Origin)
	}
	if _, err := note.Open(signed, verifiers); err != nil {
		return "", fail(http.StatusForbidden, "no valid signature by a key of log %s: %v", c.Origin, err)
	}
	if old > c.Size {
		return "", fail(http.StatusBadRequest, "old size %d is above the checkpoint size %d", old, c.Size)
	}
	if old == 0 && len(proof) > 0 {
		return "", fail(http.StatusBadRequest, "a consistency proof from size 0 must be empty")
	}
	now := w.now().Truncate(time.Second)
	err = w.store.Advance(BucketLogs, c.Origin, Cosigned{Size: c.Size, Root: c.Root, At: now}, func(last Cosigned, ok bool) error {
		if !ok {
			last = Cosigned{}
		}
		conflict := func(format string, args ...any) error {
			e := fail(http.StatusConflict, format, args...)
			e.size = &last.Size
			return e
		}
		switch {
		case old != last.Size:
			return conflict("old size %d is not %d, the size of the latest checkpoint cosigned for %s", old, last.Size, c.Origin)
		case old == c.Size:
			if ok && c.Root != last.Root {
				return conflict("checkpoint of %s at size %d has another root than the one cosigned at that size", c.Origin, c.Size)
			}
		case old > 0:
			if err := tlog.VerifyConsistency(old, c.Size, proof, last.Root[:], c.Root[:]); err != nil {
				w.log.Warn("add-checkpoint: inconsistent checkpoint (possible log misbehaviour)", "origin", c.Origin, "old_size", old, "size", c.Size, "error", err)
				return fail(http.StatusUnprocessableEntity, "the consistency proof from size %d to %d does not verify: %v", old, c.Size, err)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sig, err := checkpoint.Cosign(c, w.key, now)
	if err != nil {
		return "", err
	}
	w.log.Info("cosigned an external checkpoint", "origin", c.Origin, "size", c.Size)
	return SignatureLine(sig), nil
}

// parseAddCheckpoint splits a request body: "old <size>", up to 63 base64
// proof hashes, an empty line, then the signed checkpoint.
func parseAddCheckpoint(body []byte) (old uint64, proof [][]byte, signed []byte, err error) {
	i := bytes.Index(body, []byte("\n\n"))
	if i < 0 {
		return 0, nil, nil, errors.New("no empty line between the old size and proof lines and the checkpoint")
	}
	head, signed := string(body[:i]), body[i+2:]
	lines := strings.Split(head, "\n")
	rest, ok := strings.CutPrefix(lines[0], "old ")
	if !ok {
		return 0, nil, nil, errors.New(`the first line must be "old <size>"`)
	}
	if rest == "" || (len(rest) > 1 && rest[0] == '0') || strings.TrimLeft(rest, "0123456789") != "" {
		return 0, nil, nil, fmt.Errorf("old size %q is not a decimal without leading zeros", rest)
	}
	old, err = strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("old size %q is out of range", rest)
	}
	if len(lines)-1 > maxProofLines {
		return 0, nil, nil, fmt.Errorf("%d consistency proof lines, at most %d", len(lines)-1, maxProofLines)
	}
	for n, l := range lines[1:] {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != tlog.HashSize {
			return 0, nil, nil, fmt.Errorf("consistency proof line %d is not the base64 of a %d-byte hash", n+1, tlog.HashSize)
		}
		proof = append(proof, h)
	}
	return old, proof, signed, nil
}
