package app

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/verifier/internal/history"
	"github.com/witnz/witnz/services/verifier/internal/verify"
)

// Bounds of ListRuns.
const (
	defaultRuns = 100
	maxRuns     = 1000
)

// handler serves the Verifier API. It implements the generated interface
// itself rather than embedding the Unimplemented stub, so a new RPC in the
// proto fails the build until it is answered here.
type handler struct {
	runner  *runner
	history *history.Store
}

var _ verifierv1connect.VerifierServiceHandler = (*handler)(nil)

// authorize admits operators and the gateway.
func authorize(ctx context.Context, rpc string) error {
	id, ok := mtls.PeerIdentity(ctx)
	if ok && (id.Kind == mtls.KindOperator || id == mtls.Service("gateway")) {
		return nil
	}
	caller := "unidentified"
	if ok {
		caller = id.String()
	}
	return connect.NewError(connect.CodePermissionDenied,
		fmt.Errorf("%s requires an operator identity (spiffe://witnz/operator/<name>) or %s; caller is %s", rpc, mtls.Service("gateway"), caller))
}

func (h *handler) Verify(ctx context.Context, req *connect.Request[verifierv1.VerifyRequest]) (*connect.Response[verifierv1.VerifyResponse], error) {
	if err := authorize(ctx, "Verify"); err != nil {
		return nil, err
	}
	resp, err := h.runner.run(ctx, req.Msg.GetTable(), triggerAPI)
	if err != nil {
		return nil, connect.NewError(verifyCode(err), err)
	}
	return connect.NewResponse(resp), nil
}

// verifyCode maps the verifier's errors to Connect codes.
func verifyCode(err error) connect.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, verify.ErrTableName):
		return connect.CodeInvalidArgument
	case errors.Is(err, verify.ErrNotProtected), errors.Is(err, verify.ErrDatabase):
		return connect.CodeFailedPrecondition
	case errors.Is(err, verify.ErrWitness), errors.Is(err, verify.ErrNotCaughtUp):
		return connect.CodeUnavailable
	}
	return connect.CodeInternal
}

func (h *handler) ListRuns(ctx context.Context, req *connect.Request[verifierv1.ListRunsRequest]) (*connect.Response[verifierv1.ListRunsResponse], error) {
	if err := authorize(ctx, "ListRuns"); err != nil {
		return nil, err
	}
	limit := int(req.Msg.GetLimit())
	if limit == 0 {
		limit = defaultRuns
	}
	limit = min(limit, maxRuns)
	runs, err := h.history.List(req.Msg.GetTable(), limit)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("read the run history: %w", err))
	}
	return connect.NewResponse(&verifierv1.ListRunsResponse{Runs: runs}), nil
}
