package e2e

import (
	"strings"
	"testing"
)

// TestSlowMoveKeepsMemory moves a guest that dirties its memory as fast as
// it can over a narrow --bandwidth, so that the move takes many passes and
// auto-converge throttles the guest's CPU, then the same move back without
// auto-converge (a long --max-downtime lets it end). After each, a file held
// only in the guest's memory (tmpfs) must read back with the checksum taken
// before, and the guest's kernel must have logged no BUG, corruption, oops
// or lockup. Under TCG, QEMU 7.2 loses pages a running guest writes during
// the move (machine.LosesDirtyPages): this test hung the guest on arrival
// until hv moved such a guest's memory with the guest paused.
func TestSlowMoveKeepsMemory(t *testing.T) {
	a, b := newListeningHost(t), newListeningHost(t)
	a.peerWith("b", b, "host-a")
	b.peerWith("a", a, "host-b")
	const vm = "dirty"
	a.must("vm", "create", vm, "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--cpu-compat", "--start")
	a.waitHeartbeat(vm)
	sum := strings.Fields(a.exec(vm, "dd if=/dev/urandom of=/run/keep bs=1M count=48 2>/dev/null && sha256sum /run/keep"))[0]
	a.exec(vm, "(while :; do dd if=/dev/zero of=/run/scratch bs=1M count=24 2>/dev/null; done) </dev/null >/dev/null 2>&1 &")
	a.exec(vm, "(i=0; while :; do i=$((i+1)); echo $i > /run/counter; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")

	check := func(h *host, when string) {
		t.Helper()
		h.waitHeartbeat(vm)
		got := strings.Fields(h.exec(vm, "sha256sum /run/keep"))
		if len(got) == 0 || got[0] != sum {
			t.Errorf("%s: the memory-resident file reads %v, sha256 before the move %s", when, got, sum)
		}
		if log := h.exec(vm, "dmesg | grep -E 'BUG:|corruption|Oops|soft lockup|Kernel panic|general protection' || true"); strings.TrimSpace(log) != "" {
			t.Errorf("%s: the guest's kernel logged:\n%s", when, log)
		}
	}
	c0 := a.counter(vm)
	a.move(vm, "b", "--bandwidth", "8M")
	check(b, "after the slow move with auto-converge")
	if c := b.counter(vm); c <= c0 {
		t.Errorf("guest counter %d before the move, %d after", c0, c)
	}
	b.move(vm, "a", "--bandwidth", "8M", "--no-auto-converge", "--max-downtime", "20s")
	check(a, "after the slow move without auto-converge")
}
