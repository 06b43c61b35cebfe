// Package promscrape reads the Prometheus text exposition of a service's
// /metrics (the admin listener every witnz service has) and answers what
// the rows need from it: counter sums and histograms, differenced between
// two scrapes, with quantiles estimated as PromQL's histogram_quantile
// does.
package promscrape

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sample is one line of the exposition.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples is a whole scrape.
type Samples []Sample

var client = &http.Client{Timeout: 5 * time.Second}

// Get scrapes url (e.g. http://127.0.0.1:9000/metrics).
func Get(ctx context.Context, url string) (Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the text format; comments and malformed lines are skipped.
func Parse(r io.Reader) (Samples, error) {
	var out Samples
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, ok := parseLine(line)
		if ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

func parseLine(line string) (Sample, bool) {
	s := Sample{Labels: map[string]string{}}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, false
		}
		s.Name = line[:i]
		if !parseLabels(line[i+1:j], s.Labels) {
			return s, false
		}
		rest = strings.TrimSpace(line[j+1:])
	} else {
		name, r, ok := strings.Cut(line, " ")
		if !ok {
			return s, false
		}
		s.Name, rest = name, strings.TrimSpace(r)
	}
	// A timestamp may follow the value.
	v, _, _ := strings.Cut(rest, " ")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return s, false
	}
	s.Value = f
	return s, true
}

func parseLabels(s string, into map[string]string) bool {
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), ",")) {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(rest, `"`) {
			return false
		}
		// Find the closing quote, skipping escaped characters.
		var b strings.Builder
		i := 1
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					b.WriteByte('\n')
				default:
					b.WriteByte(rest[i])
				}
				continue
			}
			b.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return false
		}
		into[strings.TrimSpace(k)] = b.String()
		s = rest[i+1:]
	}
	return true
}

func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Sum adds the samples named name whose labels include want.
func (ss Samples) Sum(name string, want map[string]string) float64 {
	var t float64
	for _, s := range ss {
		if s.Name == name && matches(s.Labels, want) {
			t += s.Value
		}
	}
	return t
}

// Bucket is a cumulative histogram bucket: Count observations ≤ Le.
type Bucket struct {
	Le    float64
	Count float64
}

// Histogram is a Prometheus histogram, summed over matching series.
type Histogram struct {
	Buckets    []Bucket // by Le, the last one +Inf
	Sum, Count float64
}

// Histogram collects name_bucket, name_sum and name_count over the series
// whose labels include want.
func (ss Samples) Histogram(name string, want map[string]string) Histogram {
	h := Histogram{Sum: ss.Sum(name+"_sum", want), Count: ss.Sum(name+"_count", want)}
	byLe := map[float64]float64{}
	for _, s := range ss {
		if s.Name != name+"_bucket" || !matches(s.Labels, want) {
			continue
		}
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		byLe[le] += s.Value
	}
	for le, c := range byLe {
		h.Buckets = append(h.Buckets, Bucket{Le: le, Count: c})
	}
	slices.SortFunc(h.Buckets, func(a, b Bucket) int {
		switch {
		case a.Le < b.Le:
			return -1
		case a.Le > b.Le:
			return 1
		}
		return 0
	})
	return h
}

// Sub is the histogram of the observations made between o and h (h is
// the later scrape).
func (h Histogram) Sub(o Histogram) Histogram {
	out := Histogram{Sum: h.Sum - o.Sum, Count: h.Count - o.Count}
	prev := map[float64]float64{}
	for _, b := range o.Buckets {
		prev[b.Le] = b.Count
	}
	for _, b := range h.Buckets {
		out.Buckets = append(out.Buckets, Bucket{Le: b.Le, Count: b.Count - prev[b.Le]})
	}
	return out
}

// Mean is Sum / Count (NaN without observations).
func (h Histogram) Mean() float64 {
	if h.Count <= 0 {
		return math.NaN()
	}
	return h.Sum / h.Count
}

// Quantile estimates the q-quantile (0 < q < 1) by linear interpolation
// inside the bucket that holds it, as histogram_quantile does; an estimate
// in the +Inf bucket is the largest finite bound. NaN without
// observations.
func (h Histogram) Quantile(q float64) float64 {
	if len(h.Buckets) == 0 {
		return math.NaN()
	}
	total := h.Buckets[len(h.Buckets)-1].Count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, b := range h.Buckets {
		if b.Count >= rank {
			if math.IsInf(b.Le, 1) {
				if i > 0 {
					return h.Buckets[i-1].Le
				}
				return math.NaN()
			}
			if b.Count == below {
				return b.Le
			}
			return lower + (b.Le-lower)*(rank-below)/(b.Count-below)
		}
		lower, below = b.Le, b.Count
	}
	return lower
}
