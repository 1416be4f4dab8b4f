// Package stats is the benchmarks' arithmetic on measured series (median,
// percentiles, ratios, throughput) and how numbers are written in RESULTS.md.
package stats

import (
	"slices"
	"time"
)

// Median of d (the mean of the middle two for an even count), 0 for none; d is
// not reordered.
func Median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Min is the smallest of d, 0 for none.
func Min(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Min(d)
}

// Max is the largest of d, 0 for none.
func Max(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// Percentile is the p-th percentile by nearest rank: the smallest value with at least
// p% of the values at or below it.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	k := max((p*len(s)+99)/100, 1)
	return s[min(k, len(s))-1]
}

// P90 is the 90th percentile (Percentile).
func P90(d []time.Duration) time.Duration { return Percentile(d, 90) }

// Ratio is a / b, 0 when b is 0.
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Throughput is bytes moved in d, in MiB/s; 0 for no time.
func Throughput(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / (1 << 20) / d.Seconds()
}

// MedianThroughput is the throughput of each run (bytes[i] / d[i]), median.
func MedianThroughput(bytes []int64, d []time.Duration) float64 {
	var v []time.Duration // reuse median: MiB/s scaled into a Duration
	for i := range d {
		if i < len(bytes) {
			v = append(v, time.Duration(Throughput(bytes[i], d[i])*1e6))
		}
	}
	return float64(Median(v)) / 1e6
}

// MedianSize is the median of byte counts.
func MedianSize(b []int64) int64 {
	var v []time.Duration
	for _, x := range b {
		v = append(v, time.Duration(x))
	}
	return int64(Median(v))
}
