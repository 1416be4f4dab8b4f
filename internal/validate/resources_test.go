package validate

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestMemory(t *testing.T) {
	const host = 16 << 30
	tests := []struct {
		n, host uint64
		want    string
	}{
		{512 << 20, host, ""},
		{32 << 20, host, ""},
		{host, host, ""},
		{64 << 30, 0, ""}, // host unknown
		{16 << 20, host, "memory: 16M is less than the minimum of 32M; use at least 32M, e.g. 512M"},
		{0, host, "memory: 0 is less than the minimum of 32M; use at least 32M, e.g. 512M"},
		{1000000000, host, "memory: 976562.5K is not a multiple of 1M; use 953M or 954M"},
		{64 << 30, host, "memory: 64G is more than the host's total memory of about 16G; use at most 16G, e.g. 8G"},
		{2 << 30, 1<<30 + 12345, "memory: 2G is more than the host's total memory of about 1G; use at most 1G, e.g. 512M"},
	}
	for _, tc := range tests {
		checkErr(t, "Memory", Memory("memory", tc.n, tc.host), tc.want)
	}
}

func TestCPUs(t *testing.T) {
	tests := []struct {
		n, host int
		want    string
	}{
		{1, 4, ""},
		{255, 4, ""},
		{8, 2, ""}, // overcommit is allowed
		{0, 4, "cpus: 0 is out of range; use 1 to 255 (this host has 4)"},
		{256, 0, "cpus: 256 is out of range; use 1 to 255"},
		{-1, 0, "cpus: -1 is out of range; use 1 to 255"},
	}
	for _, tc := range tests {
		checkErr(t, "CPUs", CPUs("cpus", tc.n, tc.host), tc.want)
	}
}

// checkErr compares err with want ("" = nil) after the ErrInvalid prefix.
func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: nil error, want %q", what, want)
		return
	}
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("%s: %v does not wrap ErrInvalid", what, err)
	}
	if got := strings.TrimPrefix(err.Error(), "invalid input: "); got != want {
		t.Errorf("%s\n got %s\nwant %s", what, got, want)
	}
}
