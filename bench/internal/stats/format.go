package stats

import (
	"fmt"
	"time"
)

// Secs is d in seconds with two decimals: "1.23 s".
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// Ms is d rounded to the millisecond: "1.234s", "56ms".
func Ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// MiB is a byte count in MiB with one decimal.
func MiB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// SignedMiB is a byte difference in MiB with its sign.
func SignedMiB(b float64) string { return fmt.Sprintf("%+.1f MiB", b/(1<<20)) }

// MiBs is a throughput in MiB/s, "n/a" when not positive.
func MiBs(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f MiB/s", v)
}

// Cell is a series' median with its range, or why there is none.
func Cell(d []time.Duration, f func(time.Duration) string) string {
	if len(d) == 0 {
		return "—"
	}
	if len(d) == 1 {
		return f(d[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(Median(d)), f(Min(d)), f(Max(d)))
}

// RatioCell is the ratio of the medians of a and b, in bold, or "—" when one is empty.
func RatioCell(a, b []time.Duration) string {
	if len(a) == 0 || len(b) == 0 {
		return "—"
	}
	return fmt.Sprintf("**%.2f**", Ratio(Median(a), Median(b)))
}
