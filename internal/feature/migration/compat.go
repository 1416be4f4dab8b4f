package migration

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Compatible says why a host described by info cannot run the VM req
// sends, or nil. It is checked on both sides: by the source before it
// starts (to fail early, with the reason) and by the target (which must not
// take what it cannot run).
func Compatible(req api.MigrationCreate, info api.HostInfo) error {
	cfg, version, err := vmconfig.Parse("config", req.Config)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	refuse := func(format string, a ...any) error {
		return fmt.Errorf("host %s cannot run VM %s: %s: %w", info.Hostname, cfg.Name, fmt.Sprintf(format, a...), errdefs.ErrConflict)
	}
	if req.QEMUVersion != "" {
		src, dst := qemuVersion(req.QEMUVersion), qemuVersion(info.QEMUVersion)
		if dst == nil {
			return refuse("its QEMU version %q cannot be read", info.QEMUVersion)
		}
		if src != nil && slices.Compare(dst, src) < 0 {
			return refuse("its QEMU %s is older than this host's %s, which a running VM cannot move back to; upgrade QEMU there first",
				versionString(dst), versionString(src))
		}
	}
	if req.MachineType != "" && len(info.MachineTypes) > 0 && !slices.Contains(info.MachineTypes, req.MachineType) {
		return refuse("its QEMU lacks machine type %s", req.MachineType)
	}
	switch {
	case (req.Live || req.Saved) && req.CPUModel == "host" && info.Accelerator != "kvm":
		return refuse("the VM runs on the host's own CPU model under KVM, and that host has no KVM; turn on the VM's processor compatibility (cpu_compat) while it is off")
	case (req.Live || req.Saved) && req.CPUModel == "max" && info.AcceleratorCPU != "max":
		return refuse("the VM runs on QEMU's max CPU model, whose features depend on the accelerator, and that host gives VMs %s under %s; turn on the VM's processor compatibility (cpu_compat) while it is off",
			info.AcceleratorCPU, info.Accelerator)
	}
	if cfg.Generation == 2 && info.Firmware.UEFICode == "" {
		return refuse("it has no UEFI firmware (Debian package ovmf)")
	}
	if cfg.SecureBoot && info.Firmware.SecureBootCode == "" {
		return refuse("it has no Secure Boot firmware (Debian package ovmf)")
	}
	if len(info.ConfigVersions) > 0 && !slices.Contains(info.ConfigVersions, version) {
		return refuse("it does not read configuration version %d (it reads %v); upgrade hv there first", version, info.ConfigVersions)
	}
	return nil
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// qemuVersion reads "7.2.22" out of a version string.
func qemuVersion(s string) []int {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return nil
	}
	out := make([]int, 3)
	for i := range out {
		out[i], _ = strconv.Atoi(m[i+1])
	}
	return out
}

func versionString(v []int) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }
