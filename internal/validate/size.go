package validate

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// MaxSize is the largest size accepted: sizes are handed to QEMU and to
// file-system calls as signed 64-bit numbers.
const MaxSize = uint64(1) << 63

const sizeHint = "use a number with K, M, G or T, e.g. 512M"

// maxSizeInput bounds the work done on absurd input (a 1 MB string of digits).
const maxSizeInput = 64

var units = []struct {
	suffix string
	shift  uint
}{
	{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10},
}

// ParseSize parses a size such as "512M", "512MiB", "1.5G", "2T" or "4096"
// (plain digits are bytes). Suffixes are case-insensitive and binary: K, KB and
// KiB all mean 1024 bytes. Like Hyper-V, "MB" means MiB, so "512MB" is 512 MiB;
// users write MB and mean what their OS shows. A fraction is allowed only when
// the result is a whole number of bytes ("1.5G" yes, "1.5" no).
func ParseSize(field, s string) (uint64, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s; %s", errdefs.ErrInvalid, field, why, sizeHint)
	}
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return 0, bad("is empty")
	case len(t) > maxSizeInput:
		return 0, bad(fmt.Sprintf("%q is too long to be a size", s))
	case t[0] == '-':
		return 0, bad(fmt.Sprintf("%q is negative", s))
	}
	num, shift, ok := splitUnit(t)
	if !ok {
		return 0, bad(fmt.Sprintf("%q is not a size", s))
	}
	intPart, frac, hasDot := strings.Cut(num, ".")
	if !allDigits(intPart) || !allDigits(frac) || intPart == "" && frac == "" || hasDot && frac == "" {
		return 0, bad(fmt.Sprintf("%q is not a size", s))
	}
	// Exact arithmetic: value = (int.frac as an integer) * 2^shift / 10^len(frac).
	mant, _ := new(big.Int).SetString(intPart+frac, 10)
	mant.Lsh(mant, shift)
	div := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(mant, div, new(big.Int))
	if r.Sign() != 0 {
		if shift == 0 {
			return 0, fmt.Errorf("%w: %s: %q is a fraction of a byte; add a unit (K, M, G or T), e.g. %sG",
				errdefs.ErrInvalid, field, s, num)
		}
		return 0, bad(fmt.Sprintf("%q is not a whole number of bytes", s))
	}
	if !q.IsUint64() || q.Uint64() > MaxSize {
		return 0, fmt.Errorf("%w: %s: %q is too large; the largest size is %s",
			errdefs.ErrInvalid, field, s, FormatSize(MaxSize))
	}
	return q.Uint64(), nil
}

// splitUnit splits "1.5GiB" into "1.5" and 30. ok is false for an unknown unit.
func splitUnit(t string) (num string, shift uint, ok bool) {
	i := len(t)
	for i > 0 && !(t[i-1] >= '0' && t[i-1] <= '9' || t[i-1] == '.') {
		i--
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	switch unit {
	case "", "B":
		return num, 0, true
	}
	for _, u := range units {
		switch unit {
		case u.suffix, u.suffix + "B", u.suffix + "IB":
			return strings.TrimSpace(num), u.shift, true
		}
	}
	return "", 0, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatSize writes n in the largest unit that represents it exactly with at
// most three decimals ("512M", "1.5G"), else as plain bytes; ParseSize reads
// every result back to n.
func FormatSize(n uint64) string {
	for _, u := range units {
		unit := uint64(1) << u.shift
		if n < unit {
			continue
		}
		whole, rem := n/unit, n%unit
		s := strconv.FormatUint(whole, 10)
		if rem == 0 {
			return s + u.suffix
		}
		var frac []byte
		for len(frac) < 3 && rem != 0 {
			rem *= 10 // rem < 2^40, cannot overflow
			frac = append(frac, byte('0'+rem/unit))
			rem %= unit
		}
		if rem == 0 {
			return s + "." + string(frac) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}
