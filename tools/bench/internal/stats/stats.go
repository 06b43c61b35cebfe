// Package stats summarizes benchmark samples: latency percentiles and rates
// over a window of (time, count) observations.
package stats

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of latency samples, in the unit of the samples.
type Summary struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summarize returns the nearest-rank percentiles of xs. xs is not modified.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		N:    len(s),
		P50:  Percentile(s, 50),
		P90:  Percentile(s, 90),
		P99:  Percentile(s, 99),
		Max:  s[len(s)-1],
		Mean: sum / float64(len(s)),
	}
}

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Point is a cumulative count observed at a time.
type Point struct {
	At    time.Time
	Count uint64
}

// Rate is the average rate of a cumulative count between the last point at
// or before from and the first point at or after to. It reports the window
// it actually used.
func Rate(points []Point, from, to time.Time) (perSecond float64, start, end Point, ok bool) {
	i := -1
	for k, p := range points {
		if !p.At.After(from) {
			i = k
		}
	}
	j := -1
	for k, p := range points {
		if !p.At.Before(to) {
			j = k
			break
		}
	}
	if i < 0 {
		i = 0
	}
	if j < 0 {
		j = len(points) - 1
	}
	if j <= i || len(points) < 2 {
		return 0, Point{}, Point{}, false
	}
	start, end = points[i], points[j]
	d := end.At.Sub(start.At).Seconds()
	if d <= 0 || end.Count < start.Count {
		return 0, start, end, false
	}
	return float64(end.Count-start.Count) / d, start, end, true
}

// FirstAtLeast returns the time of the first point whose count is at least
// n, and false when no point reaches n.
func FirstAtLeast(points []Point, n uint64) (time.Time, bool) {
	k, found := slices.BinarySearchFunc(points, n, func(p Point, n uint64) int {
		switch {
		case p.Count < n:
			return -1
		case p.Count > n:
			return 1
		}
		return 0
	})
	// Counts are non-decreasing, so the search lands on the first point
	// with Count >= n; for equal runs move back to the first one.
	if found {
		for k > 0 && points[k-1].Count >= n {
			k--
		}
	}
	if k >= len(points) {
		return time.Time{}, false
	}
	return points[k].At, true
}
