// Package control seals and opens the control messages that operator
// actions and heartbeats send through the WAL as logical decoding messages
// (pg_logical_emit_message with prefix "witnz"), so that they take their
// place in the WAL order.
//
// A message is JSON authenticated with an HMAC under the deployment's
// commitment key: a database superuser can write WAL but cannot forge a
// message. ReplayGuard refuses a genuine message written to the WAL a
// second time.
package control

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/witnz/witnz/libs/commitment"
)

// Prefix is the logical decoding message prefix of control messages.
const Prefix = "witnz"

// Version is the message format version.
const Version = 1

// MaxSize bounds a payload.
const MaxSize = 64 << 10

// Operations.
const (
	OpHeartbeat = "heartbeat"
	OpUnprotect = "unprotect"
	OpAccept    = "accept"
)

// Message is a control message.
type Message struct {
	V     int    `json:"v"`
	Op    string `json:"op"`
	Table string `json:"table,omitempty"`
	// Slot is the deployment's replication slot: other deployments sharing
	// the database ignore the message.
	Slot string `json:"slot,omitempty"`
	// Nonce is 16 random bytes, hex.
	Nonce string `json:"nonce"`
	// IssuedAt is when the message was sealed, in Unix microseconds.
	IssuedAt int64 `json:"issued_at_us"`

	// Seq is the log entry an accept refers to.
	Seq uint64 `json:"seq,omitempty"`
	// Key, Data and OldData are the accepted transition's commitments,
	// 64 hex characters each (Data and OldData may be empty).
	Key     string `json:"key,omitempty"`
	Data    string `json:"data,omitempty"`
	OldData string `json:"old_data,omitempty"`
	// By is the operator identity, e.g. operator/admin.
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// MAC is hex HMAC-SHA256(K, "witnz/control/v1\x00" || JSON of the
	// message with MAC empty).
	MAC string `json:"mac,omitempty"`
}

// Issued is IssuedAt as a time.
func (m Message) Issued() time.Time { return time.UnixMicro(m.IssuedAt) }

// Errors of Open and Parse.
var (
	// ErrMalformed means the payload is not a valid control message.
	ErrMalformed = errors.New("malformed control message")
	// ErrForged means the MAC does not verify under the deployment key.
	ErrForged = errors.New("control message MAC does not verify: not sealed with this deployment's commitment key")
)

const macDomain = "witnz/control/v1\x00"

// Seal fills V, Nonce and IssuedAt when they are zero, checks the message
// and returns the payload with its MAC.
func Seal(k commitment.Key, m Message) ([]byte, error) {
	if m.V == 0 {
		m.V = Version
	}
	if m.Nonce == "" {
		var n [16]byte
		if _, err := rand.Read(n[:]); err != nil {
			return nil, fmt.Errorf("control message nonce: %w", err)
		}
		m.Nonce = hex.EncodeToString(n[:])
	}
	if m.IssuedAt == 0 {
		m.IssuedAt = time.Now().UnixMicro()
	}
	m.MAC = ""
	if err := m.check(); err != nil {
		return nil, err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode control message: %w", err)
	}
	m.MAC = hex.EncodeToString(mac(k, body))
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode control message: %w", err)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(out), MaxSize)
	}
	return out, nil
}

func mac(k commitment.Key, body []byte) []byte {
	h := hmac.New(sha256.New, k[:])
	h.Write([]byte(macDomain))
	h.Write(body)
	return h.Sum(nil)
}

// Open parses payload and verifies its MAC: ErrMalformed for anything that
// is not a well-formed version-1 message, ErrForged when the MAC does not
// verify.
func Open(k commitment.Key, payload []byte) (Message, error) {
	m, err := Parse(payload)
	if err != nil {
		return Message{}, err
	}
	got, err := hex.DecodeString(m.MAC)
	if err != nil || len(got) != sha256.Size {
		return Message{}, fmt.Errorf("%w: mac is not 64 hex characters", ErrMalformed)
	}
	unsigned := m
	unsigned.MAC = ""
	body, err := json.Marshal(unsigned)
	if err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !hmac.Equal(got, mac(k, body)) {
		return Message{}, ErrForged
	}
	return m, nil
}

// Parse decodes and checks payload WITHOUT verifying its MAC. Use Open;
// Parse is for routing on a field (Slot) before deciding whether a message
// concerns this deployment at all.
func Parse(payload []byte) (Message, error) {
	if len(payload) > MaxSize {
		return Message{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(payload), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var m Message
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Message{}, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if err := m.check(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// check validates the fields a sealed message must have.
func (m Message) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if m.V != Version {
		return bad("version %d, want %d", m.V, Version)
	}
	if n, err := hex.DecodeString(m.Nonce); err != nil || len(n) != 16 {
		return bad("nonce is not 32 hex characters")
	}
	if m.IssuedAt <= 0 {
		return bad("issued_at_us missing")
	}
	if m.Slot == "" {
		return bad("slot missing: name the deployment's replication slot")
	}
	switch m.Op {
	case OpHeartbeat:
	case OpUnprotect, OpAccept:
		if s, t, ok := strings.Cut(m.Table, "."); !ok || s == "" || t == "" {
			return bad("%s names no table (want schema.table, got %q)", m.Op, m.Table)
		}
	default:
		return bad("unknown op %q", m.Op)
	}
	if m.Op == OpAccept {
		if !isCommitment(m.Key) {
			return bad("accept key is not a 64-hex-character commitment")
		}
		if m.Data != "" && !isCommitment(m.Data) {
			return bad("accept data is not a 64-hex-character commitment")
		}
		if m.OldData != "" && !isCommitment(m.OldData) {
			return bad("accept old_data is not a 64-hex-character commitment")
		}
	} else if m.Key != "" || m.Data != "" || m.OldData != "" || m.Seq != 0 {
		return bad("%s carries accept fields", m.Op)
	}
	return nil
}

func isCommitment(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == len(commitment.Commitment{})
}

// Commitment decodes a hex commitment field; empty gives nil.
func Commitment(s string) (*commitment.Commitment, error) {
	if s == "" {
		return nil, nil
	}
	var c commitment.Commitment
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(c) {
		return nil, fmt.Errorf("%w: %q is not a 64-hex-character commitment", ErrMalformed, s)
	}
	copy(c[:], b)
	return &c, nil
}
