package app

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
)

// handler serves the Anchor API. It implements the generated interface
// itself rather than embedding the Unimplemented stub, so a new RPC in the
// proto fails the build until it is answered here.
type handler struct{}

var _ anchorv1connect.AnchorServiceHandler = (*handler)(nil)

func (*handler) AnchorNow(context.Context, *connect.Request[anchorv1.AnchorNowRequest]) (*connect.Response[anchorv1.AnchorNowResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New(
		"anchoring is not available in this version: it arrives with issue 8 and will publish the latest cosigned checkpoint of every table to write-once storage and return its receipt"))
}

func (*handler) ListAnchors(context.Context, *connect.Request[anchorv1.ListAnchorsRequest]) (*connect.Response[anchorv1.ListAnchorsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New(
		"anchor receipts are not available in this version: they arrive with issue 8, which records a receipt for every anchored object and lists them here newest first"))
}

func (*handler) CheckAnchors(context.Context, *connect.Request[anchorv1.CheckAnchorsRequest]) (*connect.Response[anchorv1.CheckAnchorsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New(
		"anchor checks are not available in this version: they arrive with issue 8 and will prove with consistency proofs that today's logs extend what was anchored"))
}
