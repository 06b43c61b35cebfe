package anchorcheck

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	alertv1 "github.com/witnz/witnz/libs/gen/witnz/alert/v1"
	anchorv1 "github.com/witnz/witnz/libs/gen/witnz/anchor/v1"
	"github.com/witnz/witnz/libs/gen/witnz/anchor/v1/anchorv1connect"
	"github.com/witnz/witnz/libs/mtls"
	"github.com/witnz/witnz/libs/pki"
	"github.com/witnz/witnz/libs/rpcserver"
	"github.com/witnz/witnz/libs/testenv"
)

// fakeAnchor is a seam for the anchor service: CheckAnchors answers what
// the test sets (the service itself is tested in services/anchor).
type fakeAnchor struct {
	anchorv1connect.UnimplementedAnchorServiceHandler
	mu     sync.Mutex
	resp   *anchorv1.CheckAnchorsResponse
	err    error
	calls  int
	caller mtls.Identity
}

func (f *fakeAnchor) CheckAnchors(ctx context.Context, _ *connect.Request[anchorv1.CheckAnchorsRequest]) (*connect.Response[anchorv1.CheckAnchorsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.caller, _ = mtls.PeerIdentity(ctx)
	if f.err != nil {
		return nil, f.err
	}
	return connect.NewResponse(f.resp), nil
}

func (f *fakeAnchor) set(resp *anchorv1.CheckAnchorsResponse, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp, f.err = resp, err
}

func (f *fakeAnchor) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// alertLog records raised alerts.
type alertLog struct {
	mu     sync.Mutex
	alerts []*alertv1.Alert
}

func (a *alertLog) Raise(als ...*alertv1.Alert) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.alerts = append(a.alerts, als...)
}

func (a *alertLog) all() []*alertv1.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*alertv1.Alert(nil), a.alerts...)
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// serveAnchor serves fa over mutual TLS and returns a client with the
// verifier's certificate.
func serveAnchor(t *testing.T, fa *fakeAnchor) (anchorv1connect.AnchorServiceClient, string, *mtls.Config) {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Service("anchor"), mtls.Service("verifier")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	load := func(id mtls.Identity) *mtls.Config {
		p := pki.PathsFor(dir, id)
		cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	srv, err := rpcserver.New(rpcserver.Config{Name: "anchor", Addr: "127.0.0.1:0", TLS: load(mtls.Service("anchor")).Server(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	path, h := anchorv1connect.NewAnchorServiceHandler(fa, srv.HandlerOptions()...)
	srv.Handle(path, h, anchorv1connect.AnchorServiceName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	url := "https://" + srv.Addr().String()
	client := load(mtls.Service("verifier"))
	return anchorv1connect.NewAnchorServiceClient(client.HTTPClient(), url, rpcserver.ClientOptions()...), url, client
}

var receipt = &anchorv1.Receipt{Sink: "s3", Bucket: "anchors", Key: "witnz/anchors/2026-11-22T080000Z.json", VersionId: "v7",
	TableSizes: map[string]uint64{"public.audit_log": 1002}}

func TestCheck(t *testing.T) {
	fa := &fakeAnchor{}
	client, url, _ := serveAnchor(t, fa)
	alerts := &alertLog{}
	clk := &clock{t: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)}
	c := New(Config{Client: client, URL: url, Interval: time.Minute, Alerts: alerts, Now: clk.now})

	t.Run("ok", func(t *testing.T) {
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: true, Checks: []*anchorv1.AnchorCheck{{Receipt: receipt, Table: "public.audit_log", Ok: true, AnchoredSize: 1002, CurrentSize: 1302}}}, nil)
		out := c.Check(t.Context())
		if !out.Checked || !out.OK || out.Err != nil || len(alerts.all()) != 0 {
			t.Errorf("outcome %+v, alerts %v", out, alerts.all())
		}
		if fa.caller != mtls.Service("verifier") {
			t.Errorf("the anchor service saw %v, want the verifier", fa.caller)
		}
	})

	t.Run("nothing anchored", func(t *testing.T) {
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: true}, nil)
		if out := c.Check(t.Context()); out.Checked || out.Err != nil || len(alerts.all()) != 0 {
			t.Errorf("outcome %+v", out)
		}
	})

	t.Run("rewritten history is a critical alert naming the table", func(t *testing.T) {
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipt, Table: "public.audit_log", Ok: false, AnchoredSize: 1002, CurrentSize: 1302, Problem: "the consistency proof from size 1002 to 1302\ndoes not verify: history rewritten"},
			{Receipt: receipt, Table: "public.other", Ok: true},
		}}, nil)
		out := c.Check(t.Context())
		if !out.Checked || out.OK || len(out.Problems) != 1 || len(out.Alerts) != 1 {
			t.Fatalf("outcome %+v", out)
		}
		al := alerts.all()[0]
		if al.GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL || al.GetType() != TypeCheckFailed || al.GetTable() != "public.audit_log" || al.GetSource() != "verifier" {
			t.Errorf("alert %v", al)
		}
		for _, want := range []string{"public.audit_log", "size 1002", "anchors/witnz/anchors/2026-11-22T080000Z.json version v7", "history rewritten"} {
			if !strings.Contains(al.GetMessage(), want) {
				t.Errorf("message %q lacks %q", al.GetMessage(), want)
			}
		}
		if strings.Contains(al.GetMessage(), "\n") {
			t.Errorf("message spans lines: %q", al.GetMessage())
		}
		d := al.GetDetail().AsMap()
		if d["table"] != "public.audit_log" || d["version_id"] != "v7" || d["anchored_size"] != "1002" || d["current_size"] != "1302" {
			t.Errorf("detail %v", d)
		}
		// The same failure on the next round is the same alert, though the
		// log grew and the problem names another size.
		clk.add(time.Minute)
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipt, Table: "public.audit_log", Ok: false, AnchoredSize: 1002, CurrentSize: 1400, Problem: "the consistency proof from size 1002 to 1400 does not verify"},
		}}, nil)
		again := c.Check(t.Context())
		if len(again.Alerts) != 1 || again.Alerts[0].GetAlertId() != al.GetAlertId() {
			t.Errorf("second round alerts %v, want the same id %s", again.Alerts, al.GetAlertId())
		}
	})

	t.Run("not ok without a check is a failure", func(t *testing.T) {
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: false}, nil)
		out := c.Check(t.Context())
		if !out.Checked || out.OK || len(out.Alerts) != 1 || out.Alerts[0].GetSeverity() != alertv1.Severity_SEVERITY_CRITICAL {
			t.Errorf("outcome %+v", out)
		}
	})

	t.Run("missing object", func(t *testing.T) {
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: false, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipt, Ok: false, Problem: "object not found in the bucket"},
		}}, nil)
		out := c.Check(t.Context())
		if len(out.Alerts) != 1 || !strings.HasPrefix(out.Alerts[0].GetMessage(), "anchored object anchors/witnz/anchors/2026-11-22T080000Z.json version v7 (s3 sink): object not found") {
			t.Errorf("alerts %v", out.Alerts)
		}
	})

	t.Run("a failure the anchor service alerted is not alerted again", func(t *testing.T) {
		before := len(alerts.all())
		fa.set(&anchorv1.CheckAnchorsResponse{Ok: false, Alerted: true, Checks: []*anchorv1.AnchorCheck{
			{Receipt: receipt, Table: "public.audit_log", Ok: false, AnchoredSize: 1002, CurrentSize: 1500, Problem: "history rewritten"},
		}}, nil)
		out := c.Check(t.Context())
		if !out.Checked || out.OK || len(out.Problems) != 1 || len(out.Alerts) != 0 || len(alerts.all()) != before {
			t.Errorf("outcome %+v, %d new alerts; want the problem and no alert", out, len(alerts.all())-before)
		}
	})
}

func TestUnavailable(t *testing.T) {
	fa := &fakeAnchor{}
	client, url, _ := serveAnchor(t, fa)
	alerts := &alertLog{}
	clk := &clock{t: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)}
	c := New(Config{Client: client, URL: url, Interval: time.Minute, Alerts: alerts, Now: clk.now})

	fa.set(nil, connect.NewError(connect.CodeUnavailable, errors.New("no witness answers")))
	for i, step := range []time.Duration{0, 30 * time.Second, 29 * time.Second} {
		clk.add(step)
		if out := c.Check(t.Context()); out.Err == nil || len(out.Alerts) != 0 {
			t.Fatalf("round %d: %+v, want an error and no alert before the interval has passed", i, out)
		}
	}
	clk.add(time.Second)
	out := c.Check(t.Context())
	if len(out.Alerts) != 1 {
		t.Fatalf("after one interval: %+v, want one alert", out)
	}
	first := out.Alerts[0]
	if first.GetSeverity() != alertv1.Severity_SEVERITY_HIGH || first.GetType() != TypeUnavailable || !strings.Contains(first.GetMessage(), url) || !strings.Contains(first.GetMessage(), "no witness answers") {
		t.Errorf("alert %v", first)
	}
	clk.add(time.Minute)
	if out := c.Check(t.Context()); len(out.Alerts) != 0 {
		t.Errorf("the same outage alerted twice: %v", out.Alerts)
	}

	// It answers again, then a new outage is a new alert.
	fa.set(&anchorv1.CheckAnchorsResponse{Ok: true, Checks: []*anchorv1.AnchorCheck{{Receipt: receipt, Table: "public.audit_log", Ok: true}}}, nil)
	if out := c.Check(t.Context()); !out.OK || out.Err != nil {
		t.Fatalf("recovered: %+v", out)
	}
	fa.set(nil, connect.NewError(connect.CodeUnavailable, errors.New("down again")))
	c.Check(t.Context())
	clk.add(time.Minute)
	out = c.Check(t.Context())
	if len(out.Alerts) != 1 || out.Alerts[0].GetAlertId() == first.GetAlertId() {
		t.Errorf("second outage alerts %v, want one with a new id", out.Alerts)
	}
	if got := len(alerts.all()); got != 2 {
		t.Errorf("%d alerts raised, want 2", got)
	}

	// An address nobody listens on is unreachable too.
	dead := New(Config{Client: anchorv1connect.NewAnchorServiceClient(httpClient(t), "https://"+testenv.FreeAddr(t), rpcserver.ClientOptions()...),
		URL: "dead", Interval: time.Minute, Alerts: alerts, Now: clk.now})
	if out := dead.Check(t.Context()); out.Err == nil {
		t.Errorf("unreachable: %+v", out)
	}
	clk.add(time.Minute)
	if out := dead.Check(t.Context()); len(out.Alerts) != 1 || !strings.Contains(out.Alerts[0].GetMessage(), "the anchor service dead does not answer") {
		t.Errorf("unreachable after an interval: %+v", out.Alerts)
	}
}

func httpClient(t *testing.T) connect.HTTPClient {
	t.Helper()
	dir := t.TempDir()
	if err := pki.Init(dir, []mtls.Identity{mtls.Service("verifier")}, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	p := pki.PathsFor(dir, mtls.Service("verifier"))
	cfg, err := mtls.Load(mtls.Files{Cert: p.Cert, Key: p.Key, CA: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	return cfg.HTTPClient()
}

func TestRunChecksOnItsInterval(t *testing.T) {
	fa := &fakeAnchor{}
	fa.set(&anchorv1.CheckAnchorsResponse{Ok: true, Checks: []*anchorv1.AnchorCheck{{Receipt: receipt, Table: "public.audit_log", Ok: true}}}, nil)
	client, url, _ := serveAnchor(t, fa)
	c := New(Config{Client: client, URL: url, Interval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		c.Run(ctx)
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for fa.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d checks in 10 s at a 50 ms interval", fa.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
