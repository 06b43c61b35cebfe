package api

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
)

// errNoVerifier is the answer of the verification RPCs without --verifier.
var errNoVerifier = errors.New("the gateway has no verifier configured: start it with --verifier https://host:port (or WITNZ_VERIFIER)")

// Verify asks the verifier to verify a table now. The verifier's own
// answer — findings, integrity problems, or an error with its code — is
// passed through; a verification takes as long as the scan, so the
// caller's deadline is the only bound.
func (g *Gateway) Verify(ctx context.Context, req *connect.Request[gatewayv1.VerifyRequest]) (*connect.Response[gatewayv1.VerifyResponse], error) {
	if g.verifier == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errNoVerifier)
	}
	r, err := g.verifier.Verify(ctx, connect.NewRequest(&verifierv1.VerifyRequest{Table: req.Msg.GetTable()}))
	if err != nil {
		return nil, g.verifierError(err)
	}
	return connect.NewResponse(&gatewayv1.VerifyResponse{Run: r.Msg}), nil
}

// ListVerifications returns the verifier's past runs, newest first.
func (g *Gateway) ListVerifications(ctx context.Context, req *connect.Request[gatewayv1.ListVerificationsRequest]) (*connect.Response[gatewayv1.ListVerificationsResponse], error) {
	if g.verifier == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errNoVerifier)
	}
	r, err := g.verifier.ListRuns(ctx, connect.NewRequest(&verifierv1.ListRunsRequest{Table: req.Msg.GetTable(), Limit: req.Msg.GetLimit()}))
	if err != nil {
		return nil, g.verifierError(err)
	}
	return connect.NewResponse(&gatewayv1.ListVerificationsResponse{Runs: r.Msg.GetRuns()}), nil
}

// verifierError maps a failed verifier call to the gateway's answer: the
// verifier's verdicts keep their code and message, transport failures are
// UNAVAILABLE, and a refusal of the gateway's own certificate is INTERNAL
// (the caller may use the gateway; the gateway is misconfigured).
func (g *Gateway) verifierError(err error) error {
	switch code := connect.CodeOf(err); code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeNotFound:
		return connect.NewError(code, fmt.Errorf("verifier: %s", connectMessage(err)))
	case connect.CodePermissionDenied, connect.CodeUnauthenticated:
		return connect.NewError(connect.CodeInternal, fmt.Errorf("the verifier refused the gateway's certificate (%s); the gateway must run as spiffe://witnz/service/gateway", connectMessage(err)))
	case connect.CodeUnavailable:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("verifier at %s: %s", g.verifierURL, connectMessage(err)))
	default:
		return connect.NewError(code, fmt.Errorf("verifier at %s: %s", g.verifierURL, connectMessage(err)))
	}
}
