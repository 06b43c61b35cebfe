package agent

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/witnz/witnz/libs/gen/witnz/alert/v1/alertv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// AlertIdentity is the identity the alert service's certificate must carry.
var AlertIdentity = mtls.Service("alert")

// HTTP/2 keepalive pings find a dead connection well before TCP would, so a
// stream to a vanished service fails and is re-established in seconds.
const (
	pingAfterIdle = 15 * time.Second
	pingTimeout   = 10 * time.Second
)

// NewClient returns an AgentService client for the alert service at
// baseURL over mutual TLS. It refuses a server that is not AlertIdentity.
func NewClient(tlsCfg *mtls.Config, baseURL string, opts ...connect.ClientOption) alertv1connect.AgentServiceClient {
	return alertv1connect.NewAgentServiceClient(httpClient(tlsCfg), baseURL, rpcserver.ClientOptions(opts...)...)
}

func httpClient(tlsCfg *mtls.Config) *http.Client {
	tc := tlsCfg.Client()
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := mtls.PeerIdentityFromState(&cs)
		if err != nil {
			return err
		}
		if id != AlertIdentity {
			return fmt.Errorf("the server is %s, not the alert service %s: check --alert", id, AlertIdentity)
		}
		return nil
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: pingAfterIdle, PingTimeout: pingTimeout},
	}}
}
