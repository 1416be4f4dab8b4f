package validate

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestParseSize(t *testing.T) {
	ok := []struct {
		in   string
		want uint64
	}{
		{"0", 0},
		{"4096", 4096},
		{"4096B", 4096},
		{"4096K", 4096 << 10},
		{"512M", 512 << 20},
		{"512m", 512 << 20},
		{"512MiB", 512 << 20},
		{"512mib", 512 << 20},
		{"512MB", 512 << 20}, // MB is MiB, as in Hyper-V
		{"1G", 1 << 30},
		{"1.5G", 3 << 29},
		{".5G", 1 << 29},
		{"1.0", 1},
		{"2T", 2 << 40},
		{" 8 G ", 8 << 30},
		{"0.25K", 256},
		{"8388608T", 1 << 63},
		{"00012M", 12 << 20},
	}
	for _, tc := range ok {
		got, err := ParseSize("size", tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}

	const hint = "; use a number with K, M, G or T, e.g. 512M"
	bad := []struct{ in, want string }{
		{"", `memory: is empty` + hint},
		{"   ", `memory: is empty` + hint},
		{"12X", `memory: "12X" is not a size` + hint},
		{"-1G", `memory: "-1G" is negative` + hint},
		{"1.5", `memory: "1.5" is a fraction of a byte; add a unit (K, M, G or T), e.g. 1.5G`},
		{"1.0000000001K", `memory: "1.0000000001K" is not a whole number of bytes` + hint},
		{"8388608.5T", `memory: "8388608.5T" is too large; the largest size is 8388608T`},
		{"99999999999999999999999", `memory: "99999999999999999999999" is too large; the largest size is 8388608T`},
		{"NaN", `memory: "NaN" is not a size` + hint},
		{"Inf", `memory: "Inf" is not a size` + hint},
		{"1e9", `memory: "1e9" is not a size` + hint},
		{"0x10", `memory: "0x10" is not a size` + hint},
		{"+5G", `memory: "+5G" is not a size` + hint},
		{"G", `memory: "G" is not a size` + hint},
		{".", `memory: "." is not a size` + hint},
		{"1.G", `memory: "1.G" is not a size` + hint},
		{"1.2.3G", `memory: "1.2.3G" is not a size` + hint},
		{"1 2G", `memory: "1 2G" is not a size` + hint},
		{"5GG", `memory: "5GG" is not a size` + hint},
	}
	for _, tc := range bad {
		_, err := ParseSize("memory", tc.in)
		if err == nil {
			t.Errorf("ParseSize(%q) = nil error, want %q", tc.in, tc.want)
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseSize(%q) does not wrap ErrInvalid", tc.in)
		}
		if got := strings.TrimPrefix(err.Error(), "invalid input: "); got != tc.want {
			t.Errorf("ParseSize(%q)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1536, "1.5K"},
		{512 << 20, "512M"},
		{1536 << 20, "1.5G"},
		{1<<30 + 1<<20, "1025M"},
		{1<<30 + 1, "1073741825"},
		{5 << 40, "5T"},
		{1 << 63, "8388608T"},
		{1<<64 - 1, "18446744073709551615"},
	}
	for _, tc := range tests {
		if got := FormatSize(tc.in); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512M", "1.5G", "4096", "2T", "-1", "1.5", "12X", "8388608T", ".5k", "1.0000000001K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize("size", s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("ParseSize(%q): error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		if n > MaxSize {
			t.Fatalf("ParseSize(%q) = %d, above MaxSize", s, n)
		}
		f := FormatSize(n)
		m, err := ParseSize("size", f)
		if err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d; FormatSize = %q; reparsed %d, %v", s, n, f, m, err)
		}
	})
}
