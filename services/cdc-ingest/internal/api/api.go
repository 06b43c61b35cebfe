// Package api serves witnz.ingest.v1.IngestService.
package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/cdc-ingest/internal/config"
	"github.com/witnz/witnz/services/cdc-ingest/internal/pgsource"
	"github.com/witnz/witnz/services/cdc-ingest/internal/protect"
)

// StatusSource reports the pipeline's status.
type StatusSource interface {
	Status(ctx context.Context) *ingestv1.GetStatusResponse
}

// Controller changes what is protected.
type Controller interface {
	Protect(ctx context.Context, t config.Table, by string) (protect.Result, error)
	Unprotect(ctx context.Context, table, reason, by string) (protect.UnprotectResult, error)
	Accept(ctx context.Context, table string, seq uint64, reason, by string) (protect.AcceptResult, error)
}

// Service implements IngestService. Any client with a valid witnz
// certificate may read the status (the mutual-TLS handshake has checked
// the certificate); protection changes need an operator identity.
type Service struct {
	Source     StatusSource
	Controller Controller
}

var _ ingestv1connect.IngestServiceHandler = (*Service)(nil)

// GetStatus reports the slot, its lag and the protected tables.
func (s *Service) GetStatus(ctx context.Context, _ *connect.Request[ingestv1.GetStatusRequest]) (*connect.Response[ingestv1.GetStatusResponse], error) {
	return connect.NewResponse(s.Source.Status(ctx)), nil
}

// authorizeOperator admits only operator identities and returns the
// caller's identity for the record.
func authorizeOperator(ctx context.Context, rpc string) (string, error) {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id.Kind != mtls.KindOperator {
		return "", connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s requires an operator identity (spiffe://witnz/operator/<name>); this client is %s", rpc, id))
	}
	return id.Kind + "/" + id.Name, nil
}

func parseTable(name string, mode witnessv1.TableMode) (config.Table, error) {
	spec := name
	switch mode {
	case witnessv1.TableMode_TABLE_MODE_UNSPECIFIED, witnessv1.TableMode_TABLE_MODE_APPEND_ONLY:
	case witnessv1.TableMode_TABLE_MODE_MUTABLE:
		spec += ":mutable"
	default:
		return config.Table{}, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unknown mode %d: want append-only or mutable", mode))
	}
	t, err := config.ParseTable(spec)
	if err != nil {
		return t, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("table %q: want SCHEMA.TABLE, e.g. public.audit_log", name))
	}
	return t, nil
}

// controlError maps a protection-change failure to a Connect error.
func controlError(err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, pgsource.ErrNoTable), errors.Is(err, protect.ErrNotProtected), errors.Is(err, protect.ErrNoEntry):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, protect.ErrModeConflict), errors.Is(err, protect.ErrNotAcceptable):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return connect.NewError(connect.CodeFailedPrecondition, err)
}

// Protect protects a table at run time.
func (s *Service) Protect(ctx context.Context, req *connect.Request[ingestv1.ProtectRequest]) (*connect.Response[ingestv1.ProtectResponse], error) {
	by, err := authorizeOperator(ctx, "Protect")
	if err != nil {
		return nil, err
	}
	t, err := parseTable(req.Msg.GetTable(), req.Msg.GetMode())
	if err != nil {
		return nil, err
	}
	res, err := s.Controller.Protect(ctx, t, by)
	if err != nil {
		return nil, controlError(err)
	}
	return connect.NewResponse(&ingestv1.ProtectResponse{
		Table:            res.Table,
		Mode:             res.Mode,
		BaselineRows:     res.BaselineRows,
		SeamLsn:          res.Seam.String(),
		LogSize:          res.LogSize,
		AlreadyProtected: res.Already,
		DurationMs:       res.Duration.Milliseconds(),
	}), nil
}

// Unprotect stops protecting a table.
func (s *Service) Unprotect(ctx context.Context, req *connect.Request[ingestv1.UnprotectRequest]) (*connect.Response[ingestv1.UnprotectResponse], error) {
	by, err := authorizeOperator(ctx, "Unprotect")
	if err != nil {
		return nil, err
	}
	t, err := parseTable(req.Msg.GetTable(), 0)
	if err != nil {
		return nil, err
	}
	res, err := s.Controller.Unprotect(ctx, t.String(), req.Msg.GetReason(), by)
	if err != nil {
		return nil, controlError(err)
	}
	return connect.NewResponse(&ingestv1.UnprotectResponse{Table: res.Table, Lsn: res.LSN.String(), LogSize: res.LogSize}), nil
}

// Accept logs an operator's acceptance of a change.
func (s *Service) Accept(ctx context.Context, req *connect.Request[ingestv1.AcceptRequest]) (*connect.Response[ingestv1.AcceptResponse], error) {
	by, err := authorizeOperator(ctx, "Accept")
	if err != nil {
		return nil, err
	}
	t, err := parseTable(req.Msg.GetTable(), 0)
	if err != nil {
		return nil, err
	}
	res, err := s.Controller.Accept(ctx, t.String(), req.Msg.GetSeq(), req.Msg.GetReason(), by)
	if err != nil {
		return nil, controlError(err)
	}
	return connect.NewResponse(&ingestv1.AcceptResponse{Table: res.Table, Seq: res.Seq, Op: res.Op, Lsn: res.LSN.String(), LogSize: res.LogSize}), nil
}
