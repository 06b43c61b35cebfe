package rpcserver

import (
	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
)

// MaxMessageBytes bounds every message a witnz server or client accepts.
const MaxMessageBytes = 16 << 20

// ClientOptions are the options every Connect client built by a witnz
// service uses: tracing (so traces cross service boundaries), gRPC
// protocol and a bounded message size.
func ClientOptions(extra ...connect.ClientOption) []connect.ClientOption {
	opts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(MaxMessageBytes),
		connect.WithSendMaxBytes(MaxMessageBytes),
	}
	if otel, err := otelconnect.NewInterceptor(otelconnect.WithoutMetrics()); err == nil {
		opts = append(opts, connect.WithInterceptors(otel))
	}
	return append(opts, extra...)
}
