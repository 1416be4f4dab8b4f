package validate

import (
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

const (
	// MinMemory: below this no supported firmware (SeaBIOS, OVMF) boots.
	MinMemory = 32 << 20
	mib       = 1 << 20
	// MaxCPUs is what QEMU's pc and q35 machines accept without x2APIC/IOMMU tricks.
	MaxCPUs = 255
)

// Memory checks a VM's memory size: at least 32 MiB, a whole number of MiB
// (QEMU rounds otherwise, and the balloon works in MiB), and at most hostTotal.
// hostTotal 0 means unknown and skips that check.
func Memory(field string, n, hostTotal uint64) error {
	switch {
	case n < MinMemory:
		return fmt.Errorf("%w: %s: %s is less than the minimum of %s; use at least %s, e.g. 512M",
			errdefs.ErrInvalid, field, FormatSize(n), FormatSize(MinMemory), FormatSize(MinMemory))
	case n%mib != 0:
		down := n / mib * mib
		return fmt.Errorf("%w: %s: %s is not a multiple of 1M; use %s or %s",
			errdefs.ErrInvalid, field, FormatSize(n), FormatSize(down), FormatSize(down+mib))
	case hostTotal > 0 && n > hostTotal:
		return fmt.Errorf("%w: %s: %s is more than the host's total memory of about %s; use at most %s, e.g. %s",
			errdefs.ErrInvalid, field, FormatSize(n), FormatSize(hostTotal>>26<<26),
			FormatSize(hostTotal/mib*mib), FormatSize(suggestMemory(hostTotal)))
	}
	return nil
}

// suggestMemory proposes half the host, in whole GiB when the host is large
// enough, so the suggestion leaves room for the host and other VMs.
func suggestMemory(hostTotal uint64) uint64 {
	half := hostTotal / 2
	if half >= 1<<30 {
		return half / (1 << 30) * (1 << 30)
	}
	return max(half/mib*mib, MinMemory)
}

// CPUs checks a VM's virtual CPU count: 1 to 255. More vCPUs than the host has
// is allowed (it only makes the guest slower); hostCPUs, when known (> 0), is
// named in the message to help pick a value.
func CPUs(field string, n, hostCPUs int) error {
	if n >= 1 && n <= MaxCPUs {
		return nil
	}
	host := ""
	if hostCPUs > 0 {
		host = fmt.Sprintf(" (this host has %d)", hostCPUs)
	}
	return fmt.Errorf("%w: %s: %d is out of range; use 1 to %d%s",
		errdefs.ErrInvalid, field, n, MaxCPUs, host)
}
