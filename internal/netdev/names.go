package netdev

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// ifNameMax is IFNAMSIZ minus the terminating NUL.
const ifNameMax = 15

const bridgePrefix = "hvbr-"

// BridgeName is the bridge of a switch: "hvbr-" plus the name when it fits,
// else a hash of it, so the name is deterministic and at most 15 characters.
func BridgeName(switchName string) string {
	if len(bridgePrefix)+len(switchName) <= ifNameMax {
		return bridgePrefix + switchName
	}
	return bridgePrefix + hash(switchName)[:ifNameMax-len(bridgePrefix)]
}

// TapName is the host interface of a VM's NIC: "hv" and 12 hex digits of a
// hash of both, stable across restarts so a leftover tap is found again.
func TapName(vmID, nic string) string {
	return "hv" + hash(vmID + "/" + nic)[:12]
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// GenerateMAC returns a random MAC under QEMU's 52:54:00 prefix, which is
// locally administered and unicast.
func GenerateMAC() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// ValidateMAC accepts a unicast, non-zero MAC written as six colon-separated
// hex pairs.
func ValidateMAC(field, s string) error { return validate.MAC(field, s) }

// bridgeMAC pins a bridge's MAC; otherwise Linux gives the bridge its lowest
// port's MAC and the host's address moves whenever a VM starts or stops.
func bridgeMAC(switchName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("hv-bridge/" + switchName))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// tapMAC is the host side of a NIC: the guest's MAC with 0xfe first, so the
// two never clash in the bridge's forwarding table.
func tapMAC(guest string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(guest)
	if err != nil {
		return nil, err
	}
	hw[0] = 0xfe
	return hw, nil
}

// validIfName checks a name the kernel will take as an interface name and
// that is safe inside an nft string.
func validIfName(field, s string) error {
	if s == "" || len(s) > ifNameMax {
		return fmt.Errorf("%w: %s: %q must be 1 to %d characters; use netdev.TapName", errdefs.ErrInvalid, field, s, ifNameMax)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("%w: %s: %q contains %q; use letters, digits, '-', '_' or '.'", errdefs.ErrInvalid, field, s, r)
		}
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %s: %q is not an interface name; use netdev.TapName", errdefs.ErrInvalid, field, s)
	}
	return nil
}
