package app

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/anchor/internal/anchor"
)

// handler serves the Anchor API. It implements the generated interface
// itself rather than embedding the Unimplemented stub, so a new RPC in the
// proto fails the build until it is answered here.
type handler struct {
	anchorer *anchor.Anchorer
}

var _ anchorv1connect.AnchorServiceHandler = (*handler)(nil)

// mayAnchor admits operators and the gateway: anchoring writes an object
// that can never be removed, so not every service may ask for one.
func mayAnchor(ctx context.Context) error {
	id, ok := mtls.PeerIdentity(ctx)
	if !ok {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	if id.Kind == mtls.KindOperator || id == mtls.Service("gateway") {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("AnchorNow requires an operator identity (spiffe://witnz/operator/<name>) or %s; this client is %s", mtls.Service("gateway"), id))
}

func mayRead(ctx context.Context) error {
	if _, ok := mtls.PeerIdentity(ctx); !ok {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("a client certificate is required"))
	}
	return nil
}

func (h *handler) AnchorNow(ctx context.Context, _ *connect.Request[anchorv1.AnchorNowRequest]) (*connect.Response[anchorv1.AnchorNowResponse], error) {
	if err := mayAnchor(ctx); err != nil {
		return nil, err
	}
	r, err := h.anchorer.AnchorNow(ctx)
	switch {
	case errors.Is(err, anchor.ErrNothingToAnchor):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("nothing was anchored: %w", err))
	}
	return connect.NewResponse(&anchorv1.AnchorNowResponse{Receipt: r}), nil
}

func (h *handler) ListAnchors(ctx context.Context, req *connect.Request[anchorv1.ListAnchorsRequest]) (*connect.Response[anchorv1.ListAnchorsResponse], error) {
	if err := mayRead(ctx); err != nil {
		return nil, err
	}
	rs, err := h.anchorer.Receipts(int(req.Msg.GetLimit()))
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return connect.NewResponse(&anchorv1.ListAnchorsResponse{Receipts: rs}), nil
}

func (h *handler) CheckAnchors(ctx context.Context, req *connect.Request[anchorv1.CheckAnchorsRequest]) (*connect.Response[anchorv1.CheckAnchorsResponse], error) {
	if err := mayRead(ctx); err != nil {
		return nil, err
	}
	resp, err := h.anchorer.Check(ctx, req.Msg.GetAll())
	switch {
	case errors.Is(err, anchor.ErrNothingAnchored):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(resp), nil
}
