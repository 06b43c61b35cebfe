// Package api implements the gateway's Connect handler, GatewayService:
// a status view gathered from every witness node and cdc-ingest, a proxy to
// the alert service's query, and the live alert stream fed from Redis.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	gatewayv1 "github.com/witnz/witnz/libs/gen/witnz/gateway/v1"
	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	ingestv1 "github.com/witnz/witnz/libs/gen/witnz/ingest/v1"
	"github.com/witnz/witnz/libs/gen/witnz/ingest/v1/ingestv1connect"
	"github.com/witnz/witnz/libs/gen/witnz/verifier/v1/verifierv1connect"
	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/services/gateway/internal/livefeed"
)

// Backends are the services the gateway calls, by URL.
type Backends struct {
	// HTTPClient carries every call (mutual TLS with the gateway's own
	// certificate).
	HTTPClient connect.HTTPClient
	// ClientOptions are the options of every Connect client.
	ClientOptions []connect.ClientOption
	Witnesses     []string
	// Ingest may be empty: cdc-ingest is then reported as not configured.
	Ingest string
	Alert  string
	// Verifier may be empty: Verify and ListVerifications then answer
	// FAILED_PRECONDITION.
	Verifier string
}

// Options tune the handler; zero fields take the defaults.
type Options struct {
	// StatusTimeout bounds each backend call of GetStatus (default 3 s).
	StatusTimeout time.Duration
	// DropGrace is how long a subscriber dropped for falling behind may take
	// to accept the data already in flight before its stream is reset
	// (default 2 s).
	DropGrace time.Duration
}

type witnessNode struct {
	url    string
	client witnessv1connect.WitnessServiceClient
}

// Gateway implements gatewayv1connect.GatewayServiceHandler. Any caller with
// a valid client certificate may use it.
type Gateway struct {
	witnesses []witnessNode
	ingestURL string
	ingest    ingestv1connect.IngestServiceClient
	alertURL  string
	alert     alertv1connect.AlertServiceClient
	// verifier is nil without --verifier.
	verifierURL string
	verifier    verifierv1connect.VerifierServiceClient
	feed        *livefeed.Feed
	stopping    <-chan struct{}
	log         *slog.Logger
	opts        Options
}

var _ gatewayv1connect.GatewayServiceHandler = (*Gateway)(nil)

// New returns the handler. Live streams end when stopping is closed.
func New(b Backends, feed *livefeed.Feed, stopping <-chan struct{}, log *slog.Logger, opts Options) *Gateway {
	if opts.StatusTimeout <= 0 {
		opts.StatusTimeout = 3 * time.Second
	}
	if opts.DropGrace <= 0 {
		opts.DropGrace = 2 * time.Second
	}
	g := &Gateway{
		ingestURL: b.Ingest,
		alertURL:  b.Alert,
		alert:     alertv1connect.NewAlertServiceClient(b.HTTPClient, b.Alert, b.ClientOptions...),
		feed:      feed,
		stopping:  stopping,
		log:       log,
		opts:      opts,
	}
	for _, u := range b.Witnesses {
		g.witnesses = append(g.witnesses, witnessNode{url: u, client: witnessv1connect.NewWitnessServiceClient(b.HTTPClient, u, b.ClientOptions...)})
	}
	if b.Ingest != "" {
		g.ingest = ingestv1connect.NewIngestServiceClient(b.HTTPClient, b.Ingest, b.ClientOptions...)
	}
	if b.Verifier != "" {
		g.verifierURL = b.Verifier
		g.verifier = verifierv1connect.NewVerifierServiceClient(b.HTTPClient, b.Verifier, b.ClientOptions...)
	}
	return g
}

// GetStatus asks every witness node and cdc-ingest for their status, all at
// once. A backend that does not answer in time is reported with an error
// string; the call itself succeeds.
func (g *Gateway) GetStatus(ctx context.Context, _ *connect.Request[gatewayv1.GetStatusRequest]) (*connect.Response[gatewayv1.GetStatusResponse], error) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.StatusTimeout)
	defer cancel()
	resp := &gatewayv1.GetStatusResponse{Witnesses: make([]*gatewayv1.WitnessNodeStatus, len(g.witnesses))}
	var wg sync.WaitGroup
	for i, w := range g.witnesses {
		wg.Go(func() {
			st := &gatewayv1.WitnessNodeStatus{Address: w.url}
			r, err := w.client.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				st.Error = backendError("witness", w.url, err)
			} else {
				st.Status = r.Msg
			}
			resp.Witnesses[i] = st
		})
	}
	if g.ingest == nil {
		resp.IngestError = "cdc-ingest is not configured (start the gateway with --ingest https://host:port)"
	} else {
		wg.Go(func() {
			r, err := g.ingest.GetStatus(ctx, connect.NewRequest(&ingestv1.GetStatusRequest{}))
			if err != nil {
				resp.IngestError = backendError("cdc-ingest", g.ingestURL, err)
				return
			}
			resp.Ingest = r.Msg
		})
	}
	wg.Wait()
	return connect.NewResponse(resp), nil
}

// backendError describes a failed backend call for a status report.
func backendError(what, url string, err error) string {
	switch connect.CodeOf(err) {
	case connect.CodeDeadlineExceeded:
		return fmt.Sprintf("%s at %s did not answer in time", what, url)
	case connect.CodeUnavailable:
		return fmt.Sprintf("%s at %s unreachable: %s", what, url, connectMessage(err))
	}
	return fmt.Sprintf("%s at %s: %v", what, url, err)
}

func connectMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// ListAlerts passes the query to the alert service.
func (g *Gateway) ListAlerts(ctx context.Context, req *connect.Request[gatewayv1.ListAlertsRequest]) (*connect.Response[gatewayv1.ListAlertsResponse], error) {
	r, err := g.alert.ListAlerts(ctx, connect.NewRequest(&alertv1.ListAlertsRequest{Filter: req.Msg.GetFilter()}))
	if err != nil {
		switch code := connect.CodeOf(err); code {
		case connect.CodeInvalidArgument, connect.CodeDeadlineExceeded, connect.CodeCanceled:
			return nil, connect.NewError(code, fmt.Errorf("alert service: %s", connectMessage(err)))
		case connect.CodePermissionDenied, connect.CodeUnauthenticated:
			// The caller may use the gateway; it is the gateway's own
			// identity the alert service refused.
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("the alert service refused the gateway's certificate (%s); the gateway must run as spiffe://witnz/service/gateway", connectMessage(err)))
		default:
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("alert service at %s: %s; retry later", g.alertURL, connectMessage(err)))
		}
	}
	return connect.NewResponse(&gatewayv1.ListAlertsResponse{Alerts: r.Msg.GetAlerts()}), nil
}

// SubscribeAlerts streams every alert published from now on whose severity
// is at least min_severity. A subscriber that cannot keep up is
// disconnected with ResourceExhausted; it can resubscribe and catch up with
// ListAlerts.
func (g *Gateway) SubscribeAlerts(ctx context.Context, req *connect.Request[gatewayv1.SubscribeAlertsRequest], stream *connect.ServerStream[gatewayv1.SubscribeAlertsResponse]) error {
	minSev := req.Msg.GetMinSeverity()
	if _, known := alertv1.Severity_name[int32(minSev)]; !known {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("min_severity %d is not a known severity (0 all, 1 INFO .. 5 CRITICAL)", minSev))
	}
	sub := g.feed.Subscribe(minSev)
	defer sub.Close()
	// Send the response headers now: once the client has them, it is
	// subscribed and will see every alert published from then on.
	if err := stream.Send(nil); err != nil {
		return err
	}

	stopWatch := g.watchDrop(ctx, sub.Dropped())
	defer stopWatch()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.stopping:
			return connect.NewError(connect.CodeUnavailable, errors.New("the gateway is shutting down; subscribe again"))
		case <-sub.Dropped():
			return g.tooSlow(ctx)
		case a := <-sub.C():
			if err := stream.Send(&gatewayv1.SubscribeAlertsResponse{Alert: a}); err != nil {
				select {
				case <-sub.Dropped():
					return g.tooSlow(ctx)
				default:
					return err
				}
			}
		}
	}
}

func (g *Gateway) tooSlow(ctx context.Context) error {
	g.log.Info("live alert subscriber dropped: it could not keep up", "peer", peer(ctx))
	return connect.NewError(connect.CodeResourceExhausted,
		errors.New("this stream fell too far behind the live alert feed and was dropped; subscribe again and catch up with ListAlerts"))
}

// watchDrop makes sure a dropped subscriber's handler cannot stay blocked
// in Send forever: a client that reads nothing leaves Send waiting on HTTP/2
// flow control, so once dropped the stream gets a write deadline. The
// returned func stops the watch and lifts the deadline again, so the
// ResourceExhausted trailers can still go out.
func (g *Gateway) watchDrop(ctx context.Context, dropped <-chan struct{}) (stop func()) {
	rc, _ := ctx.Value(responseControllerKey{}).(*http.ResponseController)
	if rc == nil {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	var armed bool
	go func() {
		defer close(exited)
		select {
		case <-dropped:
			armed = rc.SetWriteDeadline(time.Now().Add(g.opts.DropGrace)) == nil
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-exited
		if armed {
			_ = rc.SetWriteDeadline(time.Time{})
		}
	}
}

type responseControllerKey struct{}

// WithResponseController lets SubscribeAlerts set write deadlines on its
// stream; wrap the gateway's handler with it.
func WithResponseController(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), responseControllerKey{}, http.NewResponseController(w))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func peer(ctx context.Context) string {
	if id, ok := mtls.PeerIdentity(ctx); ok {
		return id.String()
	}
	return ""
}
