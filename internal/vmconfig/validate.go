package vmconfig

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Limits of a configuration. A config.json may come from an imported
// directory written by anyone: every field that reaches a file name, a QEMU
// option or the guest is bounded here, once, for every load and every save.
const (
	MaxDisks      = 32
	MaxNICs       = 16
	MaxKVPPairs   = 256
	MaxKVPValue   = 2048 // Hyper-V allows 2 KiB
	MaxCmdline    = 4096
	maxDiskName   = 26 // "<name>-file" must fit QEMU's 31-character node names
	maxMemory     = 16 << 40
	maxHotplugBus = 29 // qemu.Spec allows 30 ports, hp0 to hp29
)

// KVPKey is the form of a key-value pair's key.
var KVPKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

var (
	uuidForm = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	busForm  = regexp.MustCompile(`^hp([0-9]|[12][0-9])$`)
)

// Formats a VM's images may have: QEMU opens qcow2 and raw by themselves.
// Other formats (vmdk extents, a qcow2 data file) make QEMU open other host
// files, so they are converted on import, never opened in place.
var Formats = []string{"qcow2", "raw"}

// Services are the integration services a VM can turn off.
var Services = []string{"heartbeat", "shutdown", "time-sync", "data-exchange", "guest-services", "direct-session", "backup"}

// CheckpointTypes are the values of CheckpointType ("" means production).
var CheckpointTypes = []string{"", "production", "production-only", "standard", "disabled"}

// CriticalErrorActions are the values of CriticalErrorAction ("" means pause).
var CriticalErrorActions = []string{"", "pause", "none"}

// MaxCriticalErrorTimeout bounds CriticalErrorTimeoutSeconds: 30 days.
const MaxCriticalErrorTimeout = 30 * 24 * 3600

// LocalFile reports whether f is a plain file name inside the VM's directory:
// a configuration must never make hv open, copy or delete a file elsewhere.
func LocalFile(f string) bool {
	return f != "" && f == filepath.Base(f) && f != "." && f != ".." && !strings.ContainsAny(f, "\x00/\\")
}

// Validate checks every field. The error names the field, what is wrong and
// what to do; the kind is errdefs.ErrInvalid.
func (c *Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", errdefs.ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	if err := validate.Name("name", c.Name); err != nil {
		return err
	}
	switch {
	case !uuidForm.MatchString(c.ID):
		return bad("id", "%q is not a UUID", c.ID)
	case c.Generation != 1 && c.Generation != 2:
		return bad("generation", "%d; use 1 (BIOS) or 2 (UEFI)", c.Generation)
	case c.SecureBoot && c.Generation != 2:
		return bad("secure_boot", "needs generation 2")
	}
	if err := validate.CPUs("cpus", c.CPUs, 0); err != nil {
		return err
	}
	if err := validate.Memory("memory_bytes", c.MemoryBytes, 0); err != nil {
		return err
	}
	if c.MaxMemoryBytes != 0 && (c.MaxMemoryBytes < c.MemoryBytes || c.MaxMemoryBytes > maxMemory) {
		return bad("max_memory_bytes", "%d; use 0, or the memory size up to 16T", c.MaxMemoryBytes)
	}
	if err := c.validateFiles(bad); err != nil {
		return err
	}
	if err := c.validateDisks(bad); err != nil {
		return err
	}
	if err := c.validateNICs(bad); err != nil {
		return err
	}
	if dm := c.DynamicMemory; dm != nil && (dm.MinimumBytes > dm.MaximumBytes || dm.BufferPercent < 0 || dm.BufferPercent > 2000) {
		return bad("dynamic_memory", "minimum %d, maximum %d, buffer %d%%: the minimum must not exceed the maximum, the buffer 0 to 2000",
			dm.MinimumBytes, dm.MaximumBytes, dm.BufferPercent)
	}
	if len(c.KVP) > MaxKVPPairs {
		return bad("kvp", "%d pairs; at most %d", len(c.KVP), MaxKVPPairs)
	}
	for k, v := range c.KVP {
		if err := ValidateKVP(k, v); err != nil {
			return fmt.Errorf("kvp: %w", err)
		}
	}
	for _, s := range c.DisabledServices {
		if !contains(Services, s) {
			return bad("disabled_services", "%q is not an integration service; use %s", s, strings.Join(Services, ", "))
		}
	}
	if !contains(CheckpointTypes, c.CheckpointType) {
		return bad("checkpoint_type", "%q; use production, production-only, standard or disabled", c.CheckpointType)
	}
	if !contains(CriticalErrorActions, c.CriticalErrorAction) {
		return bad("critical_error_action", "%q; use pause or none", c.CriticalErrorAction)
	}
	if t := c.CriticalErrorTimeoutSeconds; t != nil && (*t < 0 || *t > MaxCriticalErrorTimeout) {
		return bad("critical_error_timeout_seconds", "%d; use 0 (never) up to %d (30 days)", *t, MaxCriticalErrorTimeout)
	}
	return nil
}

// ValidateKVP checks one host-set key-value pair.
func ValidateKVP(key, value string) error {
	if !KVPKey.MatchString(key) {
		return fmt.Errorf("%w: key: %q; use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", errdefs.ErrInvalid, key)
	}
	if len(value) > MaxKVPValue || strings.ContainsAny(value, "\n\r\x00") {
		return fmt.Errorf("%w: value of %s: at most %d bytes on one line (no newline or NUL)", errdefs.ErrInvalid, key, MaxKVPValue)
	}
	return nil
}

func (c *Config) validateFiles(bad func(string, string, ...any) error) error {
	for _, f := range []struct{ field, name string }{{"kernel", c.Kernel}, {"initrd", c.Initrd}, {"nvram", c.NVRAM}} {
		if f.name != "" && !LocalFile(f.name) {
			return bad(f.field, "%q is not a file name inside the VM's directory", f.name)
		}
	}
	switch {
	case c.Initrd != "" && c.Kernel == "":
		return bad("initrd", "set without a kernel")
	case len(c.Cmdline) > MaxCmdline || strings.ContainsFunc(c.Cmdline, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return bad("cmdline", "at most %d bytes on one line, without control characters", MaxCmdline)
	case c.Generation == 2 && c.NVRAM == "":
		return bad("nvram", "is empty; a generation 2 VM needs its UEFI variable store")
	}
	return nil
}

func (c *Config) validateDisks(bad func(string, string, ...any) error) error {
	if len(c.Disks) > MaxDisks {
		return bad("disks", "%d; at most %d", len(c.Disks), MaxDisks)
	}
	names, files, buses := map[string]bool{}, map[string]bool{}, map[string]bool{}
	boot := 0
	for i, d := range c.Disks {
		field := fmt.Sprintf("disks[%d]", i)
		if err := validate.Name(field+".name", d.Name); err != nil {
			return err
		}
		switch {
		case len(d.Name) > maxDiskName:
			return bad(field+".name", "%q is longer than %d characters", d.Name, maxDiskName)
		case names[d.Name]:
			return bad(field+".name", "%q is repeated", d.Name)
		case !LocalFile(d.File) || files[d.File]:
			return bad(field+".file", "%q is not a file name inside the VM's directory, or another disk's", d.File)
		case !contains(Formats, d.Format):
			return bad(field+".format", "%q; a VM's images are qcow2 or raw (convert others first)", d.Format)
		}
		if err := checkBus(field+".bus", d.Bus, buses); err != nil {
			return err
		}
		if d.Boot {
			boot++
		}
		names[d.Name], files[d.File] = true, true
	}
	if boot > 1 {
		return bad("disks", "%d boot disks; at most one", boot)
	}
	return nil
}

func (c *Config) validateNICs(bad func(string, string, ...any) error) error {
	if len(c.NICs) > MaxNICs {
		return bad("nics", "%d; at most %d", len(c.NICs), MaxNICs)
	}
	names, macs := map[string]bool{}, map[string]bool{}
	buses := map[string]bool{}
	for _, d := range c.Disks {
		buses[d.Bus] = d.Bus != ""
	}
	for i, n := range c.NICs {
		field := fmt.Sprintf("nics[%d]", i)
		if err := validate.Name(field+".name", n.Name); err != nil {
			return err
		}
		if err := validate.Name(field+".switch", n.Switch); err != nil {
			return err
		}
		if err := validate.MAC(field+".mac", n.MAC); err != nil {
			return err
		}
		switch {
		case names[n.Name]:
			return bad(field+".name", "%q is repeated", n.Name)
		case macs[strings.ToLower(n.MAC)]:
			return bad(field+".mac", "%s is another NIC's", n.MAC)
		case n.VLAN < 0 || n.VLAN > 4094:
			return bad(field+".vlan", "%d; use 1 to 4094, or 0 for none", n.VLAN)
		}
		if err := checkBus(field+".bus", n.Bus, buses); err != nil {
			return err
		}
		names[n.Name], macs[strings.ToLower(n.MAC)] = true, true
	}
	return nil
}

// checkBus accepts "" or a hot-plug port hv made (hp0 to hp30), once.
func checkBus(field, bus string, used map[string]bool) error {
	if bus == "" {
		return nil
	}
	if !busForm.MatchString(bus) {
		return fmt.Errorf("%w: %s: %q is not a hot-plug port; hv names them hp0 to hp%d", errdefs.ErrInvalid, field, bus, maxHotplugBus)
	}
	if used[bus] {
		return fmt.Errorf("%w: %s: port %s is used twice", errdefs.ErrInvalid, field, bus)
	}
	used[bus] = true
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
