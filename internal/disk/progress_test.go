package disk

import (
	"math"
	"strings"
	"testing"
)

func TestParseProgress(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"    (0.00/100%)", 0, true},
		{"(12.34/100%)", 12.34, true},
		{"    (100.00/100%)", 100, true},
		{"(100.01/100%)", 0, false},
		{"(NaN/100%)", 0, false},
		{"(1e2/100%)", 0, false},
		{"(-1/100%)", 0, false},
		{"(/100%)", 0, false},
		{"12.34", 0, false},
		{"qemu-img: error", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		got, ok := ParseProgress(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseProgress(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestScanProgress(t *testing.T) {
	in := "    (0.00/100%)\r    (10.49/100%)\r    (50.00/100%)\rnoise\n    (100.00/100%)\r\n"
	var got []float64
	scanProgress(strings.NewReader(in), func(p float64) { got = append(got, p) })
	want := []float64{0, 10.49, 50, 100}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func FuzzParseProgress(f *testing.F) {
	for _, s := range []string{"    (12.34/100%)", "(100.00/100%)", "(/100%)", "(1.2.3/100%)", "((/100%)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseProgress(s)
		if !ok && p != 0 {
			t.Fatalf("ParseProgress(%q) = %v, false; want 0 when not ok", s, p)
		}
		if ok && (math.IsNaN(p) || p < 0 || p > 100) {
			t.Fatalf("ParseProgress(%q) = %v, out of range", s, p)
		}
		// The scanner must survive any byte stream, split anywhere.
		scanProgress(strings.NewReader(s+"\r"+s), func(float64) {})
	})
}
