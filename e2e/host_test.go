package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

func (h *host) info(args ...string) api.HostInfo {
	h.t.Helper()
	var info api.HostInfo
	out := h.must(append([]string{"host", "info", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		h.t.Fatalf("hv host info -o json: %v\n%s", err, out)
	}
	return info
}

// hvdFails runs a second hvd that must refuse to start, and returns what it said.
func hvdFails(t *testing.T, args ...string) string {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "hve2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{"--root", root, "--socket", filepath.Join(root, "hvd.sock")}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(*binDir, "hvd"), argv...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("hvd %s: started (or hung), want a refusal: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The accelerator is what a probe of guest code decided, with the CPU model it
// showed to work and, when VMs do not run on KVM, the reason in plain words.
func TestAcceleratorProbe(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	info := h.info()
	if info.AcceleratorMode != "auto" || info.AcceleratorProbedAt.IsZero() || info.AcceleratorCPU == "" {
		t.Fatalf("host info: %+v", info)
	}
	_, kvmErr := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	switch {
	case info.Accelerator == "kvm":
		if kvmErr != nil {
			t.Fatalf("accelerator kvm without a usable /dev/kvm (%v)", kvmErr)
		}
	case info.Accelerator == "tcg":
		if info.AcceleratorCPU != "max" || info.AcceleratorWarning == "" {
			t.Fatalf("tcg without CPU model max or a reason: %+v", info)
		}
		// --accel kvm where KVM does not run guests: refused, with the same reason.
		out := hvdFails(t, "--accel", "kvm")
		expect(t, out, "--accel kvm", "hvd --accel kvm on a host without working KVM")
		expect(t, out, strings.SplitN(info.AcceleratorWarning, ";", 2)[0], "hvd --accel kvm names the probe's reason")
	default:
		t.Fatalf("accelerator %q", info.Accelerator)
	}
	t.Logf("accelerator %s, CPU model %s: %s", info.Accelerator, info.AcceleratorCPU, info.AcceleratorWarning)
	expect(t, h.must("host", "info"), "CPU model "+info.AcceleratorCPU, "hv host info table")

	// --refresh probes again.
	again := h.info("--refresh")
	if !again.AcceleratorProbedAt.After(info.AcceleratorProbedAt) || again.Accelerator != info.Accelerator {
		t.Fatalf("refresh: before %+v, after %+v", info, again)
	}

	// A VM records what it started with.
	h.must("vm", "create", "p", "--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet", "--start")
	if v := h.vm("p"); v.Accelerator != info.Accelerator {
		t.Fatalf("VM accelerator %q, host %q", v.Accelerator, info.Accelerator)
	}
	log, _ := os.ReadFile(filepath.Join(h.vm("p").Directory, "qemu.log"))
	expect(t, string(log), "-cpu "+info.AcceleratorCPU+" ", "QEMU's command line")

	expect(t, hvdFails(t, "--accel", "xen"), "use auto, kvm or tcg", "hvd --accel xen")
	tcg := newHostFlags(t, "--accel", "tcg").info()
	if tcg.Accelerator != "tcg" || tcg.AcceleratorMode != "tcg" || !strings.Contains(tcg.AcceleratorWarning, "--accel tcg") {
		t.Fatalf("hvd --accel tcg: %+v", tcg)
	}
}

// What QEMU says when it dies after it started reaches the VM's state reason,
// also when the QEMU was started by an hvd that has since been restarted.
func TestQEMUMessagesKept(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "q", "--generation", "1", "--memory", "128M", "--kernel", guest("vmlinuz"),
		"--initrd", guest("initrd.img"), "--cmdline", "console=ttyS0 quiet", "--start")
	v := h.vm("q")
	// Killed behind hv's back by SIGTERM: QEMU says so on stderr as it goes.
	if err := syscall.Kill(v.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	v = h.waitFor("q", time.Minute, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "QEMU exited unexpectedly", "reason after SIGTERM")
	expect(t, v.StateReason, "terminating on signal 15", "QEMU's own words after SIGTERM")
	expect(t, h.must("vm", "show", "q"), "terminating on signal 15", "hv vm show")

	// Aborted: the exit status says how.
	h.must("vm", "start", "q")
	v = h.vm("q")
	syscall.Kill(v.PID, syscall.SIGABRT)
	v = h.waitFor("q", time.Minute, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "killed by signal 6", "reason after SIGABRT")
	if strings.Contains(v.StateReason, "terminating on signal 15") {
		t.Errorf("reason %q quotes the previous start's words", v.StateReason)
	}

	// QEMU keeps its log across a restart of hvd (it is no daemon writing to /dev/null).
	h.must("vm", "start", "q")
	v = h.vm("q")
	h.killHVD()
	h.startHVD()
	if got := h.vm("q"); got.State != api.StateRunning || got.PID != v.PID {
		t.Fatalf("after hvd restart: %s pid %d, want Running pid %d", got.State, got.PID, v.PID)
	}
	syscall.Kill(v.PID, syscall.SIGTERM)
	v = h.waitFor("q", time.Minute, "Off", func(v api.VM) bool { return v.State == api.StateOff })
	expect(t, v.StateReason, "terminating on signal 15", "QEMU's words after an hvd restart")
}

// hv vm stop works on a guest whose shutdown command fails and which ignores
// the power button (a minimal systemd guest without logind): hv asks through
// the agent in other ways, and says which worked.
func TestStopWithoutShutdownCommand(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	h.must("vm", "create", "s", "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--start")
	h.waitHeartbeat("s")
	// shutdown(8) fails as it does without logind; the power button does nothing.
	h.exec("s", `rm -f /sbin/shutdown /etc/acpi/PWRF/00000080 &&
		printf '#!/bin/sh\necho "Failed to connect to bus: No such file or directory" >&2\nexit 1\n' >/sbin/shutdown &&
		chmod +x /sbin/shutdown && sync`)
	r := h.hv("vm", "exec", "s", "--", "/sbin/shutdown", "-h", "-P", "+0")
	if r.code != 1 {
		t.Fatalf("the broken shutdown command: exit %d %s", r.code, r.stderr)
	}
	start := time.Now()
	h.must("vm", "stop", "s", "--timeout", "60s")
	took := time.Since(start)
	v := h.vm("s")
	if v.State != api.StateOff {
		t.Fatalf("after stop: %s (%s)", v.State, v.StateReason)
	}
	expect(t, v.StateReason, "'poweroff' through the guest agent", "the way that worked")
	if took > 30*time.Second {
		t.Errorf("stop took %s: the ladder waited for ways that had failed", took)
	}
	t.Logf("stopped in %s: %s", took.Round(time.Millisecond), v.StateReason)
	expect(t, h.log.String(), "guest-shutdown", "hvd's log names the refused way")
}
