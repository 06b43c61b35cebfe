package app

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	verifierv1 "github.com/witnz/witnz/libs/gen/witnz/verifier/v1"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
)

// handler serves the Verifier API. It implements the generated interface
// itself rather than embedding the Unimplemented stub, so a new RPC in the
// proto fails the build until it is answered here.
type handler struct{}

var _ verifierv1connect.VerifierServiceHandler = (*handler)(nil)

func (*handler) Verify(_ context.Context, req *connect.Request[verifierv1.VerifyRequest]) (*connect.Response[verifierv1.VerifyResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
		"verification of %q is not available in this version: it arrives with issue 7 and will scan the table in a REPEATABLE READ snapshot, compare its per-bucket state digests with the witnesses' and report modified, deleted and phantom rows with evidence",
		req.Msg.GetTable()))
}

func (*handler) ListRuns(context.Context, *connect.Request[verifierv1.ListRunsRequest]) (*connect.Response[verifierv1.ListRunsResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New(
		"verification history is not available in this version: it arrives with issue 7, which stores every verification run and lists them here newest first"))
}
