package cli

import (
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// HumanBytes writes a size the way sizes are typed on hv's command line (binary units,
// 512M, 2G), with one decimal when it is not a whole number of its unit.
func HumanBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatUint(n, 10) + "B"
	}
	v, i := float64(n)/1024, 0
	div := uint64(1024)
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		div *= 1024
		i++
	}
	if n%div == 0 {
		return fmt.Sprintf("%d%c", n/div, units[i])
	}
	return fmt.Sprintf("%.1f%c", v, units[i])
}

// HumanDuration writes 42s, 12m05s, 1h02m, 3d04h: two units, enough for people.
func HumanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Uptime is "-" for a VM that does not run.
func Uptime(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return HumanDuration(time.Duration(seconds * float64(time.Second)))
}

// AbsPath resolves a user's path here: hvd runs elsewhere and cannot know our directory.
func AbsPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

// YesNo writes a bool for people.
func YesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Dash is s, or "-" for an empty cell of a table.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Ago is "12s ago", or "-" for never.
func Ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return HumanDuration(now.Sub(*t)) + " ago"
}

// ShortFP is the start of a fingerprint, enough to tell certificates apart in a table.
func ShortFP(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}
