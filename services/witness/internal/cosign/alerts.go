package cosign

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/witnz/witnz/libs/alertqueue"
	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
)

// Alert types raised by the witness.
const (
	// TypeCosignRefused: a node refused to cosign a checkpoint because its
	// own state disagrees (or its policy differs).
	TypeCosignRefused = "witness.cosign_refused"
	// TypeCosignatureInvalid: the leader refused the cosignature a node
	// returned (forged, corrupted, or by a key not in the policy).
	TypeCosignatureInvalid = "witness.cosignature_invalid"
	// TypeCommandRejected: the state machine rejected a command (a batch
	// out of order, a change of a table that is not protected, ...); the
	// rejection is recorded in the replicated state.
	TypeCommandRejected = "witness.command_rejected"
)

// RejectionAlert is the alert for a command the state machine rejected.
// Its id is derived from the cluster and the Raft index, which every node
// agrees on.
func RejectionAlert(cluster string, r *witnessv1.Rejection) *alertv1.Alert {
	h := sha256.New()
	for _, s := range []string{"witnz/alert/witness/rejection/v1", cluster, r.GetTable()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], r.GetRaftIndex())
	h.Write(b[:])
	detail, err := structpb.NewStruct(map[string]any{
		"cluster":    cluster,
		"table":      r.GetTable(),
		"raft_index": fmt.Sprint(r.GetRaftIndex()),
		"reason":     r.GetReason(),
	})
	if err != nil {
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    alertqueue.IDFromSum(h.Sum(nil)),
		Type:       TypeCommandRejected,
		Severity:   alertv1.Severity_SEVERITY_HIGH,
		Message:    fmt.Sprintf("the witness state machine rejected a command for %s at Raft index %d: %s", r.GetTable(), r.GetRaftIndex(), r.GetReason()),
		Source:     Source,
		Table:      r.GetTable(),
		Detail:     detail,
		OccurredAt: timestamppb.New(time.UnixMicro(r.GetAtMicros())),
	}
}

// Source is the source of the witness's alerts.
const Source = "witness"

// alertQueue bounds the alerts waiting for delivery.
const alertQueue = 1024

// RefusalAlert is the alert for a recorded refusal. Its id is derived from
// the refusal (cluster, table, node, size, root, kind), so the refusing node
// and the leader, which both raise it, raise one alert.
func RefusalAlert(cluster string, r *witnessv1.CosignRefusal) *alertv1.Alert {
	typ, sev := TypeCosignRefused, alertv1.Severity_SEVERITY_CRITICAL
	msg := fmt.Sprintf("witness node %s refused to cosign the checkpoint of %s at size %d proposed by %s: %s", r.GetNodeId(), r.GetTable(), r.GetSize(), r.GetProposerId(), r.GetReason())
	switch r.GetKind() {
	case witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_INVALID_COSIGNATURE:
		typ = TypeCosignatureInvalid
		msg = fmt.Sprintf("witness node %s returned an invalid cosignature for the checkpoint of %s at size %d (refused by %s): %s", r.GetNodeId(), r.GetTable(), r.GetSize(), r.GetProposerId(), r.GetReason())
	case witnessv1.CosignRefusalKind_COSIGN_REFUSAL_KIND_POLICY_MISMATCH:
		sev = alertv1.Severity_SEVERITY_HIGH
	}
	detail, err := structpb.NewStruct(map[string]any{
		"cluster":  cluster,
		"node_id":  r.GetNodeId(),
		"proposer": r.GetProposerId(),
		"table":    r.GetTable(),
		"size":     fmt.Sprint(r.GetSize()),
		"root":     b64(r.GetRoot()),
		"kind":     r.GetKind().String(),
		"reason":   r.GetReason(),
	})
	if err != nil {
		// Only strings go in: NewStruct cannot fail on them.
		detail = &structpb.Struct{}
	}
	return &alertv1.Alert{
		AlertId:    refusalAlertID(cluster, r),
		Type:       typ,
		Severity:   sev,
		Message:    msg,
		Source:     Source,
		Table:      r.GetTable(),
		Detail:     detail,
		OccurredAt: timestamppb.New(time.UnixMicro(r.GetAtMicros())),
	}
}

// refusalAlertID is a UUID (version 8, RFC 9562) from SHA-256 of what the
// refusal is about.
func refusalAlertID(cluster string, r *witnessv1.CosignRefusal) string {
	h := sha256.New()
	for _, s := range []string{"witnz/alert/witness/cosign/v1", cluster, r.GetTable(), r.GetNodeId()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], r.GetSize())
	binary.BigEndian.PutUint32(b[8:], uint32(r.GetKind()))
	h.Write(b[:])
	h.Write(r.GetRoot())
	return alertqueue.IDFromSum(h.Sum(nil))
}

// Alerter delivers alerts to the alert service in the background, retrying
// until it has them. A nil *Alerter drops alerts (the caller logs them).
type Alerter = alertqueue.Queue

// NewAlerter returns an Alerter calling client; Run delivers.
func NewAlerter(client alertv1connect.AlertServiceClient, log *slog.Logger) *Alerter {
	return alertqueue.New(client, log, alertqueue.WithSize(alertQueue))
}
