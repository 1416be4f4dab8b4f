package hostenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/qemu"
)

// The accelerator's probe is kept for the rest of the host's boot
// (Options.ProbeCache), so that a restart of hvd (an upgrade, a crash) does
// not run it again: where /dev/kvm opens but KVM runs no guest, the probe
// waits out its whole timeout. A kept result is used only while nothing it
// depends on changed: the same boot, the same QEMU binary, the same KVM
// device node (a reloaded module makes a new one), the same mode and probe
// guest. 'hv host info --refresh' probes again and replaces it.

// probeGuestVersion changes whenever the probe guest does what it checks
// differently: a result of an older probe is not reused.
const probeGuestVersion = 2

// probeKey is what a kept probe result depends on.
type probeKey struct {
	Probe     int    `json:"probe"`
	BootID    string `json:"boot_id"`
	QEMU      string `json:"qemu"`
	QEMUSize  int64  `json:"qemu_size"`
	QEMUMTime int64  `json:"qemu_mtime_ns"`
	Device    string `json:"device"` // /dev/kvm's inode and change time; "" when absent
	Mode      string `json:"mode"`
}

type probeRecord struct {
	Key   probeKey   `json:"key"`
	Accel qemu.Accel `json:"accel"`
}

// currentProbeKey is the key of a probe run now with qemuBin in mode; ok is
// false when it cannot be told (no boot id, QEMU not found).
func currentProbeKey(qemuBin, mode string) (probeKey, bool) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return probeKey{}, false
	}
	bin, err := filepath.EvalSymlinks(qemuBin)
	if err != nil {
		return probeKey{}, false
	}
	st, err := os.Stat(bin)
	if err != nil {
		return probeKey{}, false
	}
	k := probeKey{Probe: probeGuestVersion, BootID: strings.TrimSpace(string(boot)), QEMU: bin, QEMUSize: st.Size(),
		QEMUMTime: st.ModTime().UnixNano(), Mode: mode}
	if dev, err := os.Stat("/dev/kvm"); err == nil {
		if sys, ok := dev.Sys().(*syscall.Stat_t); ok {
			k.Device = fmt.Sprintf("%d:%d.%d", sys.Ino, sys.Ctim.Sec, sys.Ctim.Nsec)
		}
	}
	return k, true
}

// loadProbe returns the kept result for key from path. It trusts only a
// regular file of its own user that no one else may write, in a directory
// no one else may write: hvd runs as root, and a forged result would make
// VMs start on a KVM that hangs them.
func loadProbe(path string, key probeKey) (qemu.Accel, bool) {
	if path == "" || !privateTo(filepath.Dir(path), true) || !privateTo(path, false) {
		return qemu.Accel{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return qemu.Accel{}, false
	}
	var rec probeRecord
	if json.Unmarshal(b, &rec) != nil || rec.Key != key || (rec.Accel.Name != qemu.AccelKVM && rec.Accel.Name != qemu.AccelTCG) {
		return qemu.Accel{}, false
	}
	return rec.Accel, true
}

// privateTo reports whether path is a directory (dir) or a regular file,
// not a link, owned by this process's user and writable by it alone.
func privateTo(path string, dir bool) bool {
	st, err := os.Lstat(path)
	if err != nil || st.IsDir() != dir || (!dir && !st.Mode().IsRegular()) || st.Mode().Perm()&0o022 != 0 {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(sys.Uid) == os.Geteuid()
}

// saveProbe keeps a for key at path (made 0600, its directory 0700).
func saveProbe(path string, key probeKey, a qemu.Accel) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(probeRecord{Key: key, Accel: a})
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, b, 0o600)
}
