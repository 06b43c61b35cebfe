package stats

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSummarize(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1, unsorted on purpose
	}
	got := Summarize(xs)
	want := Summary{N: 100, P50: 50, P90: 90, P99: 99, Max: 100, Mean: 50.5}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Summarize (-want +got):\n%s", diff)
	}
	if xs[0] != 100 {
		t.Fatal("Summarize sorted its input")
	}
	if got := Summarize(nil); got.N != 0 {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
	if got := Summarize([]float64{7}); got.P50 != 7 || got.P99 != 7 || got.Max != 7 {
		t.Fatalf("Summarize([7]) = %+v", got)
	}
}

func TestRateAndFirstAtLeast(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var pts []Point
	for i := range 11 {
		pts = append(pts, Point{At: t0.Add(time.Duration(i) * time.Second), Count: uint64(i * 100)})
	}
	r, start, end, ok := Rate(pts, t0.Add(2*time.Second), t0.Add(7*time.Second))
	if !ok || r != 100 || start.Count != 200 || end.Count != 700 {
		t.Fatalf("Rate = %v %v %v %v", r, start, end, ok)
	}
	// A window between points widens to the enclosing points.
	r, start, end, ok = Rate(pts, t0.Add(2500*time.Millisecond), t0.Add(6500*time.Millisecond))
	if !ok || r != 100 || start.Count != 200 || end.Count != 700 {
		t.Fatalf("Rate (between points) = %v %v %v %v", r, start, end, ok)
	}
	if _, _, _, ok := Rate(pts[:1], t0, t0.Add(time.Second)); ok {
		t.Fatal("Rate over one point reported ok")
	}

	flat := []Point{{t0, 0}, {t0.Add(time.Second), 5}, {t0.Add(2 * time.Second), 5}, {t0.Add(3 * time.Second), 9}}
	for _, tc := range []struct {
		n    uint64
		want time.Time
		ok   bool
	}{
		{0, t0, true}, {1, t0.Add(time.Second), true}, {5, t0.Add(time.Second), true},
		{6, t0.Add(3 * time.Second), true}, {9, t0.Add(3 * time.Second), true}, {10, time.Time{}, false},
	} {
		got, ok := FirstAtLeast(flat, tc.n)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("FirstAtLeast(%d) = %v %v, want %v %v", tc.n, got, ok, tc.want, tc.ok)
		}
	}
}
