package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A guest that prints on its console forever does not fill the host's disk:
// console.log stays near its cap and keeps the newest lines.
func TestConsoleFloodIsCapped(t *testing.T) {
	t.Parallel()
	const capBytes = 256 << 10
	h := newHostFlags(t, "--vm-log-max", "256K")
	h.must("vm", "create", "flood", "--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet", "--start")
	h.waitHeartbeat("flood")
	dir := h.vm("flood").Directory
	h.exec("flood", `(i=0; while :; do i=$((i+1)); echo "flood-line-$i padding padding padding padding padding"; done) >/dev/ttyS0 2>&1 </dev/null &`)
	log := filepath.Join(dir, "console.log")
	var peak int64
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if fi, err := os.Stat(log); err == nil && fi.Size() > peak {
			peak = fi.Size()
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, h.log.String(), "oldest part dropped", "hvd's log after the flood")
	// The cap plus what the guest prints between two checks (2 s) at most.
	if peak > 8*capBytes {
		t.Fatalf("console.log reached %d bytes with a cap of %d", peak, capBytes)
	}
	tail := string(b[max(0, len(b)-4096):])
	if !strings.Contains(tail, "flood-line-") {
		t.Fatalf("the newest lines are not at the end: %q", tail)
	}
	t.Logf("console.log peaked at %d bytes (cap %d), now %d", peak, capBytes, len(b))
}

// With the disk under hvd's root full, hvd keeps memory and disk consistent:
// a change that cannot be written is refused with the reason and undone, the
// VM runs on, a QEMU that dies is shown Off at once (not Running), and the
// state reaches the disk once there is room; nothing is half written.
func TestStateWritesOnFullDisk(t *testing.T) {
	t.Parallel()
	h := newTmpfsHost(t, "96m", "hvfull")
	h.must("vm", "create", "full", "--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet", "--start")
	h.waitHeartbeat("full")
	v := h.vm("full")

	fill := filepath.Join(h.root, "fill")
	exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=1M").Run() // until the file system is full
	t.Cleanup(func() { os.Remove(fill) })

	// A setting that cannot be written is refused and not half made.
	msg := h.fails("vm", "kvp", "set", "full", "role=db")
	expect(t, msg, "no space left", "kvp set on a full disk")
	if _, _, err := vmconfig.Load(v.Directory); err != nil {
		t.Fatalf("config.json after the refused change: %v", err)
	}
	// A pause that cannot be recorded is undone: the guest runs on.
	expect(t, h.fails("vm", "pause", "full"), "no space left", "pause on a full disk")
	if got := h.vm("full"); got.State != api.StateRunning {
		t.Fatalf("after the refused pause: %s", got.State)
	}
	expect(t, h.exec("full", "echo still-running"), "still-running", "the guest after the refused pause")

	// QEMU dies: hv shows it Off at once, and says the state is not on disk yet.
	syscall.Kill(v.PID, syscall.SIGKILL)
	off := h.waitFor("full", time.Minute, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, off.StateReason, "could not record this state on disk", "state reason with a full disk")

	// Room again: the state reaches runtime.json within seconds.
	os.Remove(fill)
	h.waitFor("full", 30*time.Second, "state recorded", func(v api.VM) bool {
		return !strings.Contains(v.StateReason, "could not record")
	})
	var rt vmconfig.Runtime
	b, _ := os.ReadFile(filepath.Join(v.Directory, vmconfig.RuntimeFileName))
	if err := json.Unmarshal(b, &rt); err != nil || rt.State != api.StateOff {
		t.Fatalf("runtime.json: %v %+v", err, rt)
	}
	h.stopHVD()
	h.startHVD()
	if got := h.vm("full"); got.State != api.StateOff {
		t.Fatalf("after an hvd restart: %s", got.State)
	}
	if left, _ := filepath.Glob(filepath.Join(v.Directory, ".*.tmp-*")); len(left) > 0 {
		t.Fatalf("half-written files left: %v", left)
	}
}
