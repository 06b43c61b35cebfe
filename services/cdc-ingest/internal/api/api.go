// Package api serves witnz.ingest.v1.IngestService.
package api

import (
	"context"

	"connectrpc.com/connect"

	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
)

// StatusSource reports the pipeline's status.
type StatusSource interface {
	Status(ctx context.Context) *ingestv1.GetStatusResponse
}

// Service implements IngestService. Any client with a valid witnz
// certificate may read the status; the mutual-TLS handshake has already
// checked the certificate.
type Service struct {
	Source StatusSource
}

var _ ingestv1connect.IngestServiceHandler = (*Service)(nil)

// GetStatus reports the slot, its lag and the protected tables.
func (s *Service) GetStatus(ctx context.Context, _ *connect.Request[ingestv1.GetStatusRequest]) (*connect.Response[ingestv1.GetStatusResponse], error) {
	return connect.NewResponse(s.Source.Status(ctx)), nil
}
