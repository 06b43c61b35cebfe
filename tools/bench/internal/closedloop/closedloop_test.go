package closedloop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRun(t *testing.T) {
	var calls atomic.Int64
	res := Run(t.Context(), 3, 50*time.Millisecond, func(_ context.Context, caller, i int) error {
		calls.Add(1)
		if caller == 2 && i == 0 {
			return errors.New("refused")
		}
		time.Sleep(time.Millisecond) // the call's own duration
		return nil
	})
	if res.Errors != 1 || res.FirstErr == nil || res.FirstErr.Error() != "refused" {
		t.Fatalf("errors %d, first %v; want 1, refused", res.Errors, res.FirstErr)
	}
	if got, want := int64(len(res.Calls)+res.Errors), calls.Load(); got != want {
		t.Fatalf("%d calls recorded, %d made", got, want)
	}
	for i, c := range res.Calls {
		if c.End.Before(c.Start) || c.Start.Before(res.Start) || c.End.After(res.End) {
			t.Fatalf("call %d [%v, %v] outside the run [%v, %v]", i, c.Start, c.End, res.Start, res.End)
		}
		if i > 0 && c.End.Before(res.Calls[i-1].End) {
			t.Fatal("calls are not sorted by end")
		}
	}
}

func TestRateLatenciesWire(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r := Result{Start: t0, End: at(1000), Errors: 2, FirstErr: errors.New("boom"), Calls: []Call{
		{at(0), at(100)}, {at(100), at(400)}, {at(400), at(500)}, {at(500), at(1000)},
	}}
	// Ended in [400 ms, 1000 ms): the calls ending at 400 and 500.
	if rate, n := r.Rate(at(400), at(1000)); n != 2 || rate != 2/0.6 {
		t.Errorf("Rate = %v over %d calls, want %v over 2", rate, n, 2/0.6)
	}
	if diff := cmp.Diff([]float64{100, 500}, r.Latencies(at(400))); diff != "" {
		t.Errorf("Latencies (-want +got):\n%s", diff)
	}
	back := r.ToWire().Result()
	if diff := cmp.Diff(r.Calls, back.Calls); diff != "" || !back.Start.Equal(r.Start) || !back.End.Equal(r.End) || back.Errors != 2 || back.FirstErr.Error() != "boom" {
		t.Errorf("wire round trip changed the result: %s %+v", diff, back)
	}
}
