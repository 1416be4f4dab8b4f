package validate

import (
	"fmt"
	"net"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
)

// MaxNameLen keeps names usable as host names, file names and QEMU ids.
const MaxNameLen = 63

const nameHint = "use letters, digits, '-', '_' or '.' (at most 63 characters)"

// Name checks the name of a VM, switch or checkpoint. Names become file names
// and QEMU option values, so only a small ASCII set is allowed: no '/', no "..",
// no ',' (QEMU's option separator), no spaces.
func Name(field, s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %s; %s", errdefs.ErrInvalid, field, why, nameHint)
	}
	switch {
	case s == "":
		return bad("is empty")
	case len(s) > MaxNameLen:
		return bad(fmt.Sprintf("%q is %d characters long", s, len(s)))
	case !isAlnum(s[0]):
		return bad(fmt.Sprintf("%q must start with a letter or digit", s))
	case strings.Contains(s, ".."):
		return bad(fmt.Sprintf("%q contains \"..\"", s))
	}
	for _, r := range s {
		switch {
		case r < 0x80 && (isAlnum(byte(r)) || r == '-' || r == '_' || r == '.'):
		case r == ' ':
			return bad(fmt.Sprintf("%q contains a space", s))
		default:
			return bad(fmt.Sprintf("%q contains %q", s, r))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// MAC checks a NIC's MAC address: unicast, non-zero, six colon-separated hex
// pairs (the form QEMU's mac= option and the kernel take).
func MAC(field, s string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: %q %s; give six hex pairs like 52:54:00:12:34:56, or leave it empty for a generated one",
			errdefs.ErrInvalid, field, s, why)
	}
	if len(s) != 17 || strings.Count(s, ":") != 5 {
		return bad("is not a MAC address")
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return bad("is not a MAC address")
	}
	if hw[0]&1 == 1 {
		return bad("is a multicast address")
	}
	if strings.Trim(s, "0:") == "" {
		return bad("is all zeros")
	}
	return nil
}
