package cli

import (
	"testing"
	"time"
)

func TestHumanUnits(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 1023: "1023B", 512 << 20: "512M", 2 << 30: "2G",
		1536 << 20: "1.5G", 1 << 40: "1T", 1536: "1.5K"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{42 * time.Second: "42s", 725 * time.Second: "12m05s",
		3725 * time.Second: "1h02m", 76 * time.Hour: "3d04h"} {
		if got := HumanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
