package qemu

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// DiskSpec is one virtual disk.
type DiskSpec struct {
	ID     string // QEMU device id
	Path   string // absolute path of the image the VM writes to
	Format string // "qcow2" or "raw"
	Boot   bool   // boot from this disk first
	Bus    string // optional: a hot-plug port (HotplugPortID) so the disk can be removed live
	// Backing is Path's backing chain, nearest first (checkpoint images).
	// Every image is opened explicitly under its ImageNodes names, so QMP
	// calls can name any image of the chain without asking QEMU.
	Backing []Image
	// OnError is what QEMU does when the host's storage fails a request:
	// OnErrorStop pauses the guest (status io-error) and re-issues the
	// request on cont; OnErrorReport hands the error to the guest; ""
	// leaves QEMU's default (stop on ENOSPC only).
	OnError string
}

// What a disk does on a host I/O error (QEMU's werror and rerror).
const (
	OnErrorStop   = "stop"
	OnErrorReport = "report"
)

// Image is one image file of a disk's backing chain.
type Image struct {
	Path   string // absolute
	Format string // "qcow2" or "raw"
}

// NICSpec is one network adapter backed by a host tap interface.
type NICSpec struct {
	ID  string // QEMU device id; the netdev is "<id>-net"
	Tap string // host tap interface, created by the caller
	MAC string
	Bus string // optional: a hot-plug port, so the NIC can be removed live
}

// Spec is everything that goes on one VM's QEMU command line.
type Spec struct {
	Name        string
	UUID        string
	Generation  int // 1: pc + SeaBIOS; 2: q35 + UEFI
	SecureBoot  bool
	CPUs        int
	MemoryBytes uint64
	Accel       string // "kvm" or "tcg"
	// CPUModel is the -cpu model: under KVM the one the accelerator probe
	// showed to run (Accel.CPU); empty means max under TCG, host under KVM.
	CPUModel string

	Disks   []DiskSpec
	Kernel  string // direct kernel boot (optional)
	Initrd  string
	Cmdline string

	Firmware  Firmware
	NVRAMPath string // generation 2: the VM's own copy of the VARS template (see CreateNVRAM)

	QMPSocket     string // required: hv controls the VM through it
	AgentSocket   string // optional: guest agent channel
	ConsoleSocket string // optional: serial console
	ConsoleLog    string // optional, with ConsoleSocket: everything the console printed
	PIDFile       string // required: QEMU writes its pid there, for people and tools

	IncomingFD  int  // > 0: restore a saved state from this inherited fd (-incoming fd:N)
	StartPaused bool // -S: start with the CPUs stopped
	// MachineType, when set, is the versioned machine type to run (a
	// migration's target runs the source's, e.g. pc-i440fx-7.2); else
	// "pc" (generation 1) or "q35" (2), QEMU's newest.
	MachineType string
	// IncomingDefer starts QEMU waiting for a migration whose address is
	// given later over QMP (-incoming defer): a live migration's target.
	IncomingDefer bool

	NICs []NICSpec
	// SessionSockets are extra virtio-serial ports (org.hv.session.N) for
	// interactive sessions in the guest; needs AgentSocket (same controller).
	SessionSockets []string
	// HotplugPorts empty PCIe root ports (generation 2) for devices added live.
	HotplugPorts int
	// MaxMemoryBytes > MemoryBytes adds a virtio-mem device (VirtioMemID) that can
	// hot-add up to the difference while the VM runs.
	MaxMemoryBytes uint64
	Nested         bool // expose VMX/SVM to the guest (KVM only)
}

// VirtioMemID is the QEMU id of the memory hot-add device.
const VirtioMemID = "vmem0"

// HotplugPortID names the i-th hot-plug root port.
func HotplugPortID(i int) string { return fmt.Sprintf("hp%d", i) }

// SessionPortName is the guest-visible name of the i-th session port.
func SessionPortName(i int) string { return fmt.Sprintf("org.hv.session.%d", i) }

// Limits of QEMU and the kernel that a spec must respect.
const (
	// maxSocketPath: sun_path holds 108 bytes with the terminating NUL.
	maxSocketPath = 107
	// maxDiskID keeps "<id>-file" within QEMU's 31-character node names.
	maxDiskID = 26
)

func invalid(field, format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", errdefs.ErrInvalid, field, fmt.Sprintf(format, a...))
}

// check validates s; Args calls it so that no bad spec reaches QEMU.
func (s *Spec) check() error {
	if err := validate.Name("name", s.Name); err != nil {
		return err
	}
	if !regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`).MatchString(s.UUID) {
		return invalid("uuid", "%q is not a UUID; use the form 8-4-4-4-12 hex digits, e.g. 5f0c4b3e-9a1d-4c2e-8f57-1b2d3c4e5f60", s.UUID)
	}
	switch {
	case s.Generation != 1 && s.Generation != 2:
		return invalid("generation", "%d is not supported; use 1 (BIOS) or 2 (UEFI)", s.Generation)
	case s.SecureBoot && s.Generation != 2:
		return invalid("secure_boot", "needs UEFI; use generation 2 or turn Secure Boot off")
	case s.Accel != AccelKVM && s.Accel != AccelTCG:
		return invalid("accel", "%q is not supported; use kvm or tcg", s.Accel)
	case s.IncomingFD < 0:
		return invalid("incoming_fd", "%d is not a file descriptor; use 0 for none or the inherited fd (3 or more)", s.IncomingFD)
	case s.MachineType != "" && !machineTypeRE.MatchString(s.MachineType):
		return invalid("machine_type", "%q is not a QEMU machine type (e.g. pc-i440fx-7.2)", s.MachineType)
	case s.IncomingFD > 0 && s.IncomingDefer:
		return invalid("incoming_defer", "a VM restores a saved state or receives a migration, not both; drop one")
	case s.Kernel == "" && (s.Initrd != "" || s.Cmdline != ""):
		return invalid("kernel", "is empty but an initrd or kernel command line is set; give the kernel too, or drop them")
	}
	switch {
	case s.Nested && s.Accel != AccelKVM:
		return invalid("nested", "nested virtualization needs KVM, and this host runs VMs with TCG; turn nested off")
	case s.Nested && s.CPUModel != "" && s.CPUModel != "host":
		return invalid("nested", "nested virtualization needs the host's CPU model, and KVM here runs guests only as %s; turn nested off", s.CPUModel)
	case strings.ContainsAny(s.CPUModel, ", ="):
		return invalid("cpu_model", "%q is not a CPU model name; use host, max or a model from qemu-system-x86_64 -cpu help", s.CPUModel)
	case s.MaxMemoryBytes != 0 && s.MaxMemoryBytes < s.MemoryBytes:
		return invalid("max_memory", "%d is below memory %d; raise it or use 0 for no hot-add", s.MaxMemoryBytes, s.MemoryBytes)
	case len(s.SessionSockets) > 0 && s.AgentSocket == "":
		return invalid("session_sockets", "need the agent socket's virtio-serial controller; set agent_socket")
	case s.HotplugPorts < 0 || s.HotplugPorts > 30:
		return invalid("hotplug_ports", "%d; use 0 to 30", s.HotplugPorts)
	}
	for i, n := range s.NICs {
		if n.ID == "" || n.Tap == "" || n.MAC == "" {
			return invalid(fmt.Sprintf("nics[%d]", i), "needs an id, a tap and a MAC")
		}
	}
	if err := validate.CPUs("cpus", s.CPUs, 0); err != nil {
		return err
	}
	if err := validate.Memory("memory", s.MemoryBytes, 0); err != nil {
		return err
	}
	if err := s.checkFirmware(); err != nil {
		return err
	}
	if err := s.checkDisks(); err != nil {
		return err
	}
	return s.checkPaths()
}

func (s *Spec) checkFirmware() error {
	if s.Generation != 2 {
		return nil
	}
	if code := s.uefiCode(); code == "" {
		what := "OVMF firmware (" + debianOVMFCode + ")"
		if s.SecureBoot {
			what = "OVMF Secure Boot firmware (" + debianOVMFSecureCode + ")"
		}
		return invalid("firmware", "%s not found; install Debian's ovmf, or use generation 1", what)
	}
	if s.NVRAMPath == "" {
		return invalid("nvram", "is empty; generation 2 VMs need their own UEFI variable store (see CreateNVRAM)")
	}
	return nil
}

func (s *Spec) uefiCode() string {
	if s.SecureBoot {
		return s.Firmware.SecureBootCode
	}
	return s.Firmware.UEFICode
}

func (s *Spec) checkDisks() error {
	idRE := regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
	seen := map[string]bool{}
	boot := ""
	for i, d := range s.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		switch {
		case !idRE.MatchString(d.ID) || len(d.ID) > maxDiskID:
			return invalid(field+".id", "%q is not a valid disk id; start with a letter, then letters, digits, '-' or '_' (at most %d characters)", d.ID, maxDiskID)
		case seen[d.ID]:
			return invalid(field+".id", "%q is used by two disks; give each disk its own id", d.ID)
		case d.Format != "qcow2" && d.Format != "raw":
			return invalid(field+".format", "%q is not supported; use qcow2 or raw", d.Format)
		case d.Boot && boot != "":
			return invalid(field+".boot", "disks %q and %q are both marked as boot disk; mark only one", boot, d.ID)
		case d.OnError != "" && d.OnError != OnErrorStop && d.OnError != OnErrorReport:
			return invalid(field+".on_error", "%q; use stop, report, or empty for QEMU's default", d.OnError)
		}
		if err := absPath(field+".path", d.Path, true); err != nil {
			return err
		}
		for j, b := range d.Backing {
			// Backing is top first: only the bottom image may be raw.
			if b.Format != "qcow2" && (b.Format != "raw" || j != len(d.Backing)-1) {
				return invalid(fmt.Sprintf("%s.backing[%d].format", field, j), "%q; backing images are qcow2, and raw only at the bottom of a chain", b.Format)
			}
			if err := absPath(fmt.Sprintf("%s.backing[%d].path", field, j), b.Path, true); err != nil {
				return err
			}
		}
		if len(d.Backing) > 0 && d.Format != "qcow2" {
			return invalid(field+".format", "%q cannot have backing images; only qcow2 can", d.Format)
		}
		seen[d.ID] = true
		if d.Boot {
			boot = d.ID
		}
	}
	return nil
}

// checkPaths: QEMU runs in "/" (Launch), so every path must be absolute.
func (s *Spec) checkPaths() error {
	paths := []struct {
		field, path string
		required    bool
		socket      bool
	}{
		{"qmp_socket", s.QMPSocket, true, true},
		{"agent_socket", s.AgentSocket, false, true},
		{"console_socket", s.ConsoleSocket, false, true},
		{"console_log", s.ConsoleLog, false, false},
		{"pid_file", s.PIDFile, true, false},
		{"kernel", s.Kernel, false, false},
		{"initrd", s.Initrd, false, false},
		{"nvram", s.NVRAMPath, false, false},
	}
	for _, p := range paths {
		if p.path == "" && !p.required {
			continue
		}
		if err := absPath(p.field, p.path, true); err != nil {
			return err
		}
		if p.socket && len(p.path) > maxSocketPath {
			return invalid(p.field, "%q is %d bytes long; unix sockets allow at most %d; use a shorter state directory", p.path, len(p.path), maxSocketPath)
		}
	}
	if s.ConsoleLog != "" && s.ConsoleSocket == "" {
		return invalid("console_log", "is set without console_socket; set both or neither")
	}
	return nil
}

func absPath(field, path string, required bool) error {
	switch {
	case path == "" && required:
		return invalid(field, "is empty; give an absolute path")
	case path != "" && !filepath.IsAbs(path):
		return invalid(field, "%q is not absolute; give an absolute path (QEMU runs in /)", path)
	}
	return nil
}

// machineTypeRE is what a machine type may be: no option may ride along.
var machineTypeRE = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,63}$`)
