package qemu

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// Accelerators hv uses.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

const kvmDevice = "/dev/kvm"

// DetectAccelerator returns "kvm" when /dev/kvm can be opened for reading and
// writing (what QEMU needs), else "tcg" and a warning that says why and what to
// do. The check opens the device because its mere existence proves nothing: a
// missing group membership fails only at open.
func DetectAccelerator() (accel string, warning string) {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return AccelKVM, ""
	}
	const slow = "; VMs will run with TCG emulation, many times slower"
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return AccelTCG, kvmDevice + " does not exist: the CPU lacks virtualization support, it is disabled in the firmware setup, " +
			"the kvm_intel or kvm_amd module is not loaded, or this is a VM without nested virtualization" + slow
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EPERM):
		return AccelTCG, "no permission to open " + kvmDevice + "; add the user hv runs as to the kvm group" + slow
	default:
		return AccelTCG, "cannot open " + kvmDevice + ": " + err.Error() + slow
	}
}
