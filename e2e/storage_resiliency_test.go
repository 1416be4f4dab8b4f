package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// TestStorageResiliency: a VM whose data disk lives on a file system that
// really fills up becomes PausedCritical (no I/O error reaches the guest),
// runs on by itself once there is room again, its write completed intact,
// and is turned off when its storage stays away past its critical error
// timeout.
func TestStorageResiliency(t *testing.T) {
	h := newTmpfsHost(t, "128m", "hvstorage")
	const vm = "st"
	h.must("vm", "create", vm, "--generation", "1", "--memory", "192M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet")
	h.must("vm", "disk", "add", vm, "--name", "data1", "--size", "128M")
	h.must("vm", "start", vm)
	h.waitHeartbeat(vm)
	// The guest boots a kernel, no disk: its data disk is vda.
	h.execRetry(vm, "i=0; while [ ! -b /dev/vda ]; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.2; done")
	sum := strings.Fields(h.exec(vm, "dd if=/dev/urandom of=/run/src bs=1M count=24 2>/dev/null && sha256sum /run/src"))[0]

	// The guest writes 24M where 8M are left: QEMU stops at ENOSPC.
	ballast := filepath.Join(h.root, "ballast")
	fillLeaving(t, ballast, 8<<20)
	// (After a second: the exec must end before the guest pauses.)
	h.exec(vm, "(sleep 1; dd if=/run/src of=/dev/vda bs=1M oflag=direct 2>/run/dd.err; echo $? > /run/dd.rc) </dev/null >/dev/null 2>&1 &")
	v := h.waitFor(vm, time.Minute, "PausedCritical", func(v api.VM) bool { return v.State == api.StatePausedCritical })
	expect(t, v.StateReason, "disk data1: No space left on device", "the reason of a VM whose disk is full")
	if v.CriticalSince == nil {
		t.Fatal("no critical_since on a PausedCritical VM")
	}
	expect(t, h.must("vm", "list"), "PausedCritical (disk data1: No space left on device", "hv vm list")
	expect(t, h.fails("checkpoint", "create", vm), "PausedCritical", "a checkpoint of a PausedCritical VM")
	time.Sleep(6 * time.Second) // a retry or more, and the storage still full
	if v := h.vm(vm); v.State != api.StatePausedCritical || v.PID == 0 {
		t.Fatalf("while the disk stays full: %s (pid %d)", v.State, v.PID)
	}

	// Room again: the VM runs on by itself and the write completes intact.
	os.Remove(ballast)
	v = h.waitFor(vm, 30*time.Second, "Running again", func(v api.VM) bool { return v.State == api.StateRunning })
	expect(t, v.StateReason, "its storage answers again after", "the reason once the storage answers")
	if v.CriticalSince != nil {
		t.Fatalf("critical_since kept after the storage answered: %v", v.CriticalSince)
	}
	expect(t, h.execRetry(vm, "i=0; while [ ! -s /run/dd.rc ]; do i=$((i+1)); [ $i -gt 150 ] && exit 1; sleep 0.2; done; cat /run/dd.rc /run/dd.err"), "0\n", "the guest's dd")
	got := h.exec(vm, "dd if=/dev/vda bs=1M count=24 iflag=direct 2>/dev/null | sha256sum")
	expect(t, got, sum, "the data the guest wrote through the full disk")
	if k := h.exec(vm, "dmesg | grep -i -e 'I/O error' -e 'blk_update_request' -e 'vda.*error' || true"); strings.TrimSpace(k) != "" {
		t.Fatalf("the guest's kernel saw I/O errors:\n%s", k)
	}
	expect(t, h.log.String(), "storage answers again after", "hvd's log")

	// Full again and left so: the VM is turned off after its timeout.
	h.must("vm", "set", vm, "--critical-error-timeout", "15s")
	fillLeaving(t, ballast, 4<<20)
	defer os.Remove(ballast)
	h.exec(vm, "(sleep 1; dd if=/run/src of=/dev/vda bs=1M seek=24 oflag=direct) </dev/null >/dev/null 2>&1 &")
	h.waitFor(vm, time.Minute, "PausedCritical", func(v api.VM) bool { return v.State == api.StatePausedCritical })
	start := time.Now()
	v = h.waitFor(vm, 45*time.Second, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "turned off: its storage failed for", "the reason of a VM turned off after its timeout")
	expect(t, v.StateReason, "disk data1: No space left on device", "the reason of a VM turned off after its timeout")
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("turned off %s after it paused; its timeout is 15s", d)
	}
	if pids := qemuPIDs(h.root); len(pids) > 0 {
		t.Fatalf("QEMU still runs after the timeout: %v", pids)
	}
}

// fillLeaving fills the file system holding path with a file at path,
// leaving about free bytes.
func fillLeaving(t *testing.T, path string, free int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	size := int64(st.Bavail)*st.Bsize - free
	if size <= 0 {
		t.Fatalf("the file system has only %d bytes free", int64(st.Bavail)*st.Bsize)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		t.Fatalf("ballast of %d bytes: %v", size, err)
	}
}
