package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// A Gen 2 (UEFI) VM boots from its disk to a heartbeat, runs commands through its
// agent, pauses and resumes, saves and restores its memory, and stops.
func TestGen2Lifecycle(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "web", "--generation", "2", "--cpus", "2", "--memory", "512M", "--image", guest("tiny-uefi.qcow2"))
	v := h.vm("web")
	if v.State != api.StateOff || v.Generation != 2 || v.CPUs != 2 || v.MemoryBytes != 512<<20 || v.ConfigVersion < 1 {
		t.Fatalf("created VM: %+v", v)
	}
	h.must("vm", "start", "web")
	h.waitHeartbeat("web")
	expect(t, h.exec("web", "uname -s; cat /sys/firmware/efi/fw_vendor >/dev/null && echo uefi"), "uefi", "Gen 2 guest firmware")

	// A refused action names the state and the way out.
	expect(t, h.fails("vm", "start", "web"), "Running", "start of a running VM")
	expect(t, h.fails("vm", "delete", "web"), "stop it first", "delete of a running VM")
	expect(t, h.fails("vm", "set", "web", "--cpus", "4"), "stop it first", "set of CPUs on a running VM")

	// Pause stops the guest's clock; resume goes on.
	h.must("vm", "pause", "web")
	if v := h.vm("web"); v.State != api.StatePaused {
		t.Fatalf("after pause: %s", v.State)
	}
	expect(t, h.fails("vm", "exec", "web", "--", "true"), "Paused", "exec in a paused VM")
	h.must("vm", "resume", "web")
	h.waitHeartbeat("web")

	// Save keeps memory: a value only in RAM (/dev/shm) is there after start.
	value := fmt.Sprintf("hv-%d", time.Now().UnixNano())
	h.exec("web", "echo "+value+" > /dev/shm/marker")
	before := h.vm("web")
	h.must("vm", "save", "web")
	saved := h.vm("web")
	if saved.State != api.StateSaved {
		t.Fatalf("after save: %s", saved.State)
	}
	if _, err := os.Stat(saved.Directory + "/state.save"); err != nil {
		t.Fatalf("saved state file: %v", err)
	}
	if pids := qemuPIDs(h.root); len(pids) != 0 {
		t.Fatalf("QEMU still runs after save: %v", pids)
	}
	h.must("vm", "start", "web")
	v = h.waitHeartbeat("web")
	expect(t, h.exec("web", "cat /dev/shm/marker"), value, "memory after save and start")
	if v.UptimeSeconds < before.UptimeSeconds {
		t.Fatalf("uptime went back across save: %.1f -> %.1f", before.UptimeSeconds, v.UptimeSeconds)
	}

	h.must("vm", "stop", "web")
	if v := h.vm("web"); v.State != api.StateOff {
		t.Fatalf("after stop: %s (%s)", v.State, v.StateReason)
	}
	if pids := qemuPIDs(h.root); len(pids) != 0 {
		t.Fatalf("QEMU still runs after stop: %v", pids)
	}
	h.must("vm", "set", "web", "--memory", "256M", "--cpus", "1")
	if v := h.vm("web"); v.MemoryBytes != 256<<20 || v.CPUs != 1 {
		t.Fatalf("after set: %+v", v)
	}
	h.must("vm", "delete", "web")
	if r := h.hv("vm", "show", "web"); r.code == 0 {
		t.Fatal("deleted VM still shown")
	}
	if _, err := os.Stat(v.Directory); !os.IsNotExist(err) {
		t.Fatalf("deleted VM's directory: %v", err)
	}
}

// A Gen 1 (BIOS) VM boots from its disk; exec passes exit codes and output through.
func TestGen1BootAndExec(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "old", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--start")
	h.waitHeartbeat("old")
	expect(t, h.exec("old", "test -d /sys/firmware/efi && echo uefi || echo bios"), "bios", "Gen 1 guest firmware")
	r := h.hv("vm", "exec", "old", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "out") || !strings.Contains(r.stderr, "err") {
		t.Fatalf("exec exit/out/err = %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = h.hvIn([]byte("from-stdin\n"), "vm", "exec", "old", "--", "cat")
	if r.code != 0 || r.stdout != "from-stdin\n" {
		t.Fatalf("exec with stdin = %d %q %q", r.code, r.stdout, r.stderr)
	}
	// Stop from the guest: it powers itself off, hv notices and records why.
	h.hv("vm", "exec", "old", "--timeout", "5s", "--", "/bin/sh", "-c", "(sleep 1; poweroff -f) >/dev/null 2>&1 &")
	v := h.waitFor("old", time.Minute, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "shut down", "reason after a guest poweroff")
}

// A VM booted from a kernel and initrd (no disk) reaches its heartbeat.
func TestDirectKernelBoot(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "k", "--generation", "1", "--memory", "256M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet")
	h.must("vm", "start", "k")
	h.waitHeartbeat("k")
	expect(t, h.exec("k", "cat /proc/cmdline"), "console=ttyS0", "guest kernel command line")

	// The serial console is a root shell: what it computes proves the guest answered.
	r := h.hvIn([]byte("\necho console-$((6*7))-ok\n"), "vm", "console", "k")
	if r.code != 0 || !strings.Contains(r.stdout, "console-42-ok") {
		t.Fatalf("console: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	expect(t, h.must("vm", "console", "k", "--show-log"), "console-42-ok", "console log")
	h.must("vm", "kill", "k")
	if v := h.vm("k"); v.State != api.StateOff {
		t.Fatalf("after kill: %s", v.State)
	}
}

// hvd killed with -9 finds its running VM again, fully controllable; a QEMU killed
// from outside shows Off with a reason.
func TestHVDCrashAndQEMUDeath(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "a", "--generation", "1", "--memory", "256M", "--kernel", guest("vmlinuz"), "--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0", "--start")
	h.waitHeartbeat("a")
	h.exec("a", "echo before-crash > /dev/shm/x")
	pid := h.vm("a").PID

	h.killHVD()
	h.startHVD()
	v := h.vm("a")
	if v.State != api.StateRunning || v.PID != pid {
		t.Fatalf("after hvd restart: state=%s pid=%d (was %d) reason=%q", v.State, v.PID, pid, v.StateReason)
	}
	h.waitHeartbeat("a")
	expect(t, h.exec("a", "cat /dev/shm/x"), "before-crash", "guest memory across an hvd crash")
	h.must("vm", "stop", "a")
	if v := h.vm("a"); v.State != api.StateOff {
		t.Fatalf("stop after hvd restart: %s", v.State)
	}

	// QEMU killed behind hv's back.
	h.must("vm", "start", "a")
	h.waitHeartbeat("a")
	pid = h.vm("a").PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v = h.waitFor("a", 30*time.Second, "Off after QEMU was killed", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "QEMU exited unexpectedly", "reason")
	expect(t, v.StateReason, "signal 9", "reason")
	// and it starts again
	h.must("vm", "start", "a")
	h.waitHeartbeat("a")
	h.must("vm", "kill", "a")
}

// hvd killed during create and during start leaves no half VM and no orphan QEMU.
func TestCrashDuringCreateAndStart(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.killHVD()
	h.startHVD("HV_TEST_CRASH_AT=create:before-commit")
	h.hv("vm", "create", "c", "--generation", "1", "--memory", "128M", "--image", guest("tiny-bios.qcow2"))
	h.waitHVD(30 * time.Second)
	if h.cmd.ProcessState == nil {
		t.Fatal("hvd did not crash at the create hook")
	}
	h.startHVD()
	if r := h.hv("vm", "show", "c"); r.code == 0 {
		t.Fatalf("a VM half made by a crashed create exists: %s", r.stdout)
	}
	entries, _ := os.ReadDir(h.root + "/vms")
	if len(entries) != 0 {
		t.Fatalf("leftovers in vms/: %v", entries)
	}

	h.must("vm", "create", "c", "--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"), "--initrd", guest("initrd.img"))
	h.killHVD()
	h.startHVD("HV_TEST_CRASH_AT=start:launched")
	h.hv("vm", "start", "c")
	h.waitHVD(30 * time.Second)
	if h.cmd.ProcessState == nil {
		t.Fatal("hvd did not crash at the start hook")
	}
	if len(qemuPIDs(h.root)) != 1 {
		t.Fatalf("want the QEMU launched before the crash, found %v", qemuPIDs(h.root))
	}
	h.startHVD()
	v := h.vm("c")
	if v.State != api.StateOff || !strings.Contains(v.StateReason, "starting") {
		t.Fatalf("after a crash during start: %s %q", v.State, v.StateReason)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(qemuPIDs(h.root)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("orphan QEMU after recovery: %v", qemuPIDs(h.root))
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.must("vm", "start", "c")
	h.waitHeartbeat("c")
	h.must("vm", "kill", "c")
}

// Bad input gets a clear error naming the field and the fix, and creates nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	img := guest("tiny-bios.qcow2")
	corrupt := h.root + "/corrupt.qcow2"
	os.WriteFile(corrupt, append([]byte("QFI\xfb\x00\x00\x00\x03garbage"), make([]byte, 4096)...), 0o600)
	text := h.root + "/notes.txt"
	os.WriteFile(text, []byte("not a disk\n"), 0o600)

	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"vm", "create", "a/b", "--image", img}, []string{"name", "'/'"}},
		{[]string{"vm", "create", "..", "--image", img}, []string{"name"}},
		{[]string{"vm", "create", "has space", "--image", img}, []string{"name"}},
		{[]string{"vm", "create", strings.Repeat("x", 200), "--image", img}, []string{"name", "63"}},
		{[]string{"vm", "create", "m0", "--memory", "0", "--image", img}, []string{"memory"}},
		{[]string{"vm", "create", "m1", "--memory", "1T", "--image", img}, []string{"memory", "host"}},
		{[]string{"vm", "create", "m2", "--memory", "12X", "--image", img}, []string{"memory", "12X"}},
		{[]string{"vm", "create", "i1", "--image", "/nonexistent/disk.qcow2"}, []string{"image", "/nonexistent/disk.qcow2"}},
		{[]string{"vm", "create", "i2", "--image", corrupt}, []string{"image"}},
		{[]string{"vm", "create", "i3", "--image", text}, []string{"image"}},
		{[]string{"vm", "create", "g3", "--generation", "3", "--image", img}, []string{"generation"}},
		{[]string{"vm", "create", "nothing"}, []string{"image"}},
		{[]string{"vm", "start", "ghost"}, []string{"ghost", "not found"}},
	}
	for _, c := range cases {
		msg := h.fails(c.args...)
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("hv %s: error %q lacks %q", strings.Join(c.args, " "), msg, w)
			}
		}
	}
	if out := h.must("vm", "list", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("bad input created VMs: %s", out)
	}
	entries, _ := os.ReadDir(h.root + "/vms")
	if len(entries) != 0 {
		t.Fatalf("bad input left files in vms/: %v", entries)
	}
}

// Without QEMU, hvd refuses to start and says what to install.
func TestMissingQEMU(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, *binDir+"/hvd", "--root", root, "--socket", root+"/s.sock")
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("hvd started without QEMU")
	}
	expect(t, string(out), "qemu-system-x86", "hvd without QEMU")
}

// Secure Boot is enforced: OVMF's Secure Boot build with Microsoft's keys
// refuses the tiny guest's unsigned unified kernel image.
func TestSecureBootRefusesUnsignedImage(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "sb", "--generation", "2", "--secure-boot", "--memory", "256M", "--image", guest("tiny-uefi.qcow2"), "--start")
	if v := h.vm("sb"); !v.SecureBoot {
		t.Fatalf("VM shows secure_boot=false: %+v", v)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		log := h.must("vm", "console", "sb", "--show-log")
		if strings.Contains(log, "Access Denied") || strings.Contains(log, "Security Violation") {
			break
		}
		if strings.Contains(log, "hv-tiny-guest: ready") {
			t.Fatalf("an unsigned image booted under Secure Boot:\n%s", log)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Secure Boot refusal in the console within 3 minutes:\n%s", log)
		}
		time.Sleep(2 * time.Second)
	}
	if v := h.vm("sb"); v.Heartbeat == api.HeartbeatOK {
		t.Fatal("the guest agent answered: the unsigned guest ran")
	}
	h.must("vm", "kill", "sb")
}
