package disk

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"strconv"
	"strings"
)

// ParseProgress reads one update of `qemu-img convert -p`, such as
// "    (12.34/100%)", and returns the percentage. ok is false for anything else.
func ParseProgress(s string) (percent float64, ok bool) {
	s = strings.TrimSpace(s)
	num, found := strings.CutPrefix(s, "(")
	if !found {
		return 0, false
	}
	num, found = strings.CutSuffix(num, "/100%)")
	if !found || num == "" {
		return 0, false
	}
	// qemu-img prints %4.2f; accept digits and one dot only, so "NaN", "Inf",
	// "1e2" or "+5" are not progress.
	for _, c := range num {
		if (c < '0' || c > '9') && c != '.' {
			return 0, false
		}
	}
	p, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(p) || p < 0 || p > 100 {
		return 0, false
	}
	return p, true
}

// scanProgress feeds every progress update in r to fn until r ends. qemu-img
// separates updates with '\r' (it redraws one terminal line), so lines are
// split at '\r' as well as '\n'.
func scanProgress(r io.Reader, fn func(float64)) {
	sc := bufio.NewScanner(r)
	sc.Split(splitCRLF)
	for sc.Scan() {
		if p, ok := ParseProgress(sc.Text()); ok && fn != nil {
			fn(p)
		}
	}
	// Drain whatever is left (an over-long token stops the scanner), so that
	// qemu-img never blocks writing to a full pipe.
	io.Copy(io.Discard, r)
}

func splitCRLF(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
