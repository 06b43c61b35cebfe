package cli

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"strings"

	"github.com/witnz/witnz/libs/gen/witnz/gateway/v1/gatewayv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/tools/witnz/internal/stack"
)

const defaultStackFile = ".witnz/stack.json"

// gatewayFlags say which gateway to ask and with which certificate. Each
// value comes from its flag, else its environment variable, else the stack
// file of a local stack.
type gatewayFlags struct {
	stackFile, gateway, cert, key, ca string
}

func addGatewayFlags(fs *flag.FlagSet) *gatewayFlags {
	g := &gatewayFlags{}
	fs.StringVar(&g.stackFile, "stack", "", "stack `FILE` written by witnz up (env WITNZ_STACK; default "+defaultStackFile+")")
	fs.StringVar(&g.gateway, "gateway", "", "gateway URL https://host:port (env WITNZ_GATEWAY; default: from the stack file)")
	fs.StringVar(&g.cert, "tls-cert", "", "operator certificate (env WITNZ_TLS_CERT; default: from the stack file)")
	fs.StringVar(&g.key, "tls-key", "", "key of --tls-cert (env WITNZ_TLS_KEY; default: from the stack file)")
	fs.StringVar(&g.ca, "tls-ca", "", "CA bundle (env WITNZ_TLS_CA; default: from the stack file)")
	return g
}

// gatewayConn is a resolved gateway connection.
type gatewayConn struct {
	client gatewayv1connect.GatewayServiceClient
	url    string
	// witnessIDs maps witness API URLs to node ids, from the stack file
	// (used to name nodes the gateway could not reach).
	witnessIDs map[string]string
}

func (g *gatewayFlags) connect(getenv env) (*gatewayConn, error) {
	info, err := g.stack(getenv)
	if err != nil {
		return nil, err
	}
	url := firstNonEmpty(g.gateway, getenv("WITNZ_GATEWAY"), info.Gateway)
	if url == "" {
		return nil, fmt.Errorf("no gateway to ask: start the local stack with `make up` (it writes %s), or pass --gateway https://host:port (or set WITNZ_GATEWAY)", defaultStackFile)
	}
	if !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("--gateway %q must be an https:// URL (the gateway speaks mutual TLS only)", url)
	}
	tlsCfg, err := g.tls(getenv, info)
	if err != nil {
		return nil, err
	}
	ids := map[string]string{}
	for _, w := range info.Witnesses {
		ids[w.URL] = w.ID
	}
	return &gatewayConn{
		client:     gatewayv1connect.NewGatewayServiceClient(tlsCfg.HTTPClient(), url, rpcserver.ClientOptions()...),
		url:        url,
		witnessIDs: ids,
	}, nil
}

// stack reads the stack file named by --stack or WITNZ_STACK, else the
// default one if it exists; without one, Info is empty.
func (g *gatewayFlags) stack(getenv env) (stack.Info, error) {
	stackFile := firstNonEmpty(g.stackFile, getenv("WITNZ_STACK"))
	explicit := stackFile != ""
	if !explicit {
		stackFile = defaultStackFile
	}
	info, err := stack.ReadInfo(stackFile)
	switch {
	case err == nil:
		return info, nil
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return stack.Info{}, nil
	case errors.Is(err, fs.ErrNotExist):
		return info, fmt.Errorf("stack file %s does not exist: start the local stack with `make up`, or pass the service URL and the --tls-* flags", stackFile)
	}
	return info, err
}

// tls loads the operator's certificate from the flags, the environment or
// the stack file.
func (g *gatewayFlags) tls(getenv env, info stack.Info) (*mtls.Config, error) {
	return mtls.Load(mtls.Files{
		Cert: firstNonEmpty(g.cert, getenv("WITNZ_TLS_CERT"), info.TLS.Cert),
		Key:  firstNonEmpty(g.key, getenv("WITNZ_TLS_KEY"), info.TLS.Key),
		CA:   firstNonEmpty(g.ca, getenv("WITNZ_TLS_CA"), info.TLS.CA),
	})
}

// callError turns an RPC failure into one line that says what to check.
func (g *gatewayConn) callError(rpc string, err error) error {
	return fmt.Errorf("%s on gateway %s: %v (is the stack running? `witnz up` / `make up`)", rpc, g.url, err)
}
