package stats

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 50; i++ {
		d = append(d, time.Duration(51-i)*time.Millisecond)
	}
	if got := P90(d); got != 45*time.Millisecond {
		t.Errorf("p90 of 1..50 ms = %v, want 45ms", got)
	}
	if got := Percentile([]time.Duration{7}, 90); got != 7 {
		t.Errorf("p90 of one value = %v", got)
	}
	if Percentile(nil, 90) != 0 {
		t.Error("p90 of nothing must be 0")
	}
}

func TestMedian(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{3 * s}, 3 * s},
		{[]time.Duration{5 * s, 1 * s, 3 * s}, 3 * s},
		{[]time.Duration{4 * s, 1 * s, 3 * s, 2 * s}, 2500 * time.Millisecond},
	} {
		in := append([]time.Duration(nil), c.in...)
		if got := Median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in { // median must not sort its input in place
			if in[i] != c.in[i] {
				t.Errorf("median reordered its input: %v", c.in)
			}
		}
	}
	d := []time.Duration{2 * s, 9 * s, 4 * s}
	if Min(d) != 2*s || Max(d) != 9*s {
		t.Errorf("min/max of %v = %v/%v", d, Min(d), Max(d))
	}
	if r := Ratio(11*s, 10*s); r < 1.0999 || r > 1.1001 {
		t.Errorf("ratio = %v, want 1.1", r)
	}
	if Ratio(s, 0) != 0 {
		t.Error("ratio by zero must be 0")
	}
}
