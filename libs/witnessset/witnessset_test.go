package witnessset_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/witnessset"
)

func TestAnyAnswersNamesEveryUnreachableWitness(t *testing.T) {
	dir := t.TempDir()
	id := mtls.Service("verifier")
	if err := pki.Init(dir, []mtls.Identity{id}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, id)
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	// Two ports nothing listens on.
	var urls []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, "https://"+ln.Addr().String())
		ln.Close()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = witnessset.New(cfg, urls).AnyAnswers(ctx)
	if !errors.Is(err, witnessset.ErrNoWitness) {
		t.Fatalf("AnyAnswers = %v, want ErrNoWitness", err)
	}
	for _, u := range urls {
		if !strings.Contains(err.Error(), u) {
			t.Errorf("error %q does not name %s", err, u)
		}
	}
}
