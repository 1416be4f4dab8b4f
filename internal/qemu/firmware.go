package qemu

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// Debian's firmware files (packages ovmf and seabios). The 4M OVMF builds are
// the ones Debian 12 maintains; the secboot CODE needs SMM, and the ms VARS
// template has Microsoft's keys enrolled, so Secure Boot is on from the start.
const (
	debianSeaBIOS        = "/usr/share/seabios/bios-256k.bin"
	debianOVMFCode       = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	debianOVMFVars       = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	debianOVMFSecureCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	debianOVMFSecureVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// Firmware holds the paths of the firmware files; an empty string means the
// file is not installed.
type Firmware struct {
	BIOS           string // SeaBIOS, generation 1
	UEFICode       string // OVMF code, generation 2
	UEFIVars       string // OVMF variable store template
	SecureBootCode string // OVMF code with Secure Boot support (needs SMM)
	SecureBootVars string // variable store template with Microsoft's keys enrolled
}

// FindFirmware looks for Debian's firmware files.
func FindFirmware() Firmware {
	return Firmware{
		BIOS:           ifFile(debianSeaBIOS),
		UEFICode:       ifFile(debianOVMFCode),
		UEFIVars:       ifFile(debianOVMFVars),
		SecureBootCode: ifFile(debianOVMFSecureCode),
		SecureBootVars: ifFile(debianOVMFSecureVars),
	}
}

func ifFile(path string) string {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return path
	}
	return ""
}

// CreateNVRAM copies the right OVMF variable store template to dst, the VM's
// own NVRAM (UEFI variables such as the boot order live there). It never
// overwrites an existing file: that would wipe the VM's boot entries.
func CreateNVRAM(fw Firmware, secureBoot bool, dst string) (err error) {
	tmpl, field := fw.UEFIVars, "UEFI variable store template"
	if secureBoot {
		tmpl, field = fw.SecureBootVars, "Secure Boot variable store template"
	}
	if tmpl == "" {
		return fmt.Errorf("%w: firmware: %s not found; install Debian's ovmf", errdefs.ErrNotFound, field)
	}
	in, err := os.Open(tmpl)
	if err != nil {
		return fmt.Errorf("%w: firmware: cannot read %s %q: %v; reinstall Debian's ovmf", errdefs.ErrUnavailable, field, tmpl, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: nvram: %q exists already; it holds the VM's UEFI settings, delete it only to reset them", errdefs.ErrConflict, dst)
	case err != nil:
		return fmt.Errorf("%w: nvram: cannot create %q: %v; check that the VM's directory exists and is writable", errdefs.ErrUnavailable, dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%w: nvram: cannot write %q: %v; check free space", errdefs.ErrUnavailable, dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("%w: nvram: cannot write %q: %v; check free space", errdefs.ErrUnavailable, dst, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("%w: nvram: cannot write %q: %v; check free space", errdefs.ErrUnavailable, dst, err)
	}
	return nil
}
