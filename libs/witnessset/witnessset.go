// Package witnessset holds Connect clients to every node of a witness
// cluster, for services that read from the witnesses (verifier, anchor):
// readiness probes now, cross-node comparisons as those services grow.
package witnessset

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	witnessv1 "github.com/witnz/witnz/libs/gen/witnz/witness/v1"
	"github.com/witnz/witnz/libs/gen/witnz/witness/v1/witnessv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/rpcserver"
)

// ErrNoWitness is returned by AnyAnswers while no witness answers.
var ErrNoWitness = errors.New("no witness answered GetStatus")

// Set is a client per witness API URL, sharing one mTLS HTTP client.
type Set struct {
	urls    []string
	clients []witnessv1connect.WitnessServiceClient
}

// New builds clients for the witness API URLs (https://host:port).
func New(tlsCfg *mtls.Config, urls []string) *Set {
	s := &Set{urls: urls}
	hc := tlsCfg.HTTPClient()
	for _, u := range urls {
		s.clients = append(s.clients, witnessv1connect.NewWitnessServiceClient(hc, u, rpcserver.ClientOptions()...))
	}
	return s
}

// AnyAnswers asks every witness for its status at once and succeeds as soon
// as one answers; otherwise the error wraps ErrNoWitness and names each URL
// with its failure. It suits a readiness check.
func (s *Set) AnyAnswers(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(s.clients))
	for i, c := range s.clients {
		go func() {
			_, err := c.GetStatus(ctx, connect.NewRequest(&witnessv1.GetStatusRequest{}))
			if err != nil {
				err = fmt.Errorf("%s: %w", s.urls[i], err)
			}
			errc <- err
		}()
	}
	var errs []error
	for range s.clients {
		err := <-errc
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: %w", ErrNoWitness, errors.Join(errs...))
}
