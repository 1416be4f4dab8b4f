package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
)

// newListeningHost starts hvd serving the network API on a free loopback port.
func newListeningHost(t *testing.T) *host {
	t.Helper()
	return newHostFlags(t, "--listen", "127.0.0.1:0")
}

// peerWith makes to a peer of h named name: to trusts h's hvd with a
// one-time token of role peer (h may move VMs to it, nothing else), and h
// pins to's certificate.
func (h *host) peerWith(name string, to *host, trustedAs string) {
	h.t.Helper()
	var tok api.Token
	out := to.must("trust", "add", trustedAs, "--role", "peer", "-o", "json")
	if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
		h.t.Fatalf("hv trust add -o json: %v\n%s", err, out)
	}
	h.must("peer", "add", name, "--token", tok.Token)
}

// counter reads the guest's counter, which a loop in the guest bumps every
// tenth of a second: it goes on only if the guest's memory and processes do.
func (h *host) counter(vm string) int {
	h.t.Helper()
	out := strings.TrimSpace(h.exec(vm, "cat /run/counter"))
	n, err := strconv.Atoi(out)
	if err != nil {
		h.t.Fatalf("guest counter: %q", out)
	}
	return n
}

func (h *host) move(vm, to string, args ...string) api.MoveResult {
	h.t.Helper()
	argv := append([]string{"vm", "move", vm, "--to", to, "-o", "json"}, args...)
	out := h.must(argv...)
	var r api.MoveResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		h.t.Fatalf("hv %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	h.t.Logf("moved %s to %s: live=%v downtime %d ms, total %d ms, disks %d B, memory %d B, files %d B",
		vm, to, r.Live, r.Downtime, r.TotalTime, r.DiskBytes, r.MemoryBytes, r.FileBytes)
	return r
}

// TestLiveMigration moves a running VM between two hosts that trust each
// other over mutual TLS, and back: the guest's processes go on (its counter
// keeps counting), a file written before the move is on the target's disk,
// the agent answers there, change tracking comes along (the next backup is
// incremental), and the source keeps nothing of the VM; then it moves by
// quick migration (saved, copied, restored).
func TestLiveMigration(t *testing.T) {
	a, b := newListeningHost(t), newListeningHost(t)
	a.peerWith("b", b, "host-a")
	b.peerWith("a", a, "host-b")
	if out := a.must("peer", "list"); !strings.Contains(out, "online") {
		t.Fatalf("hv peer list: b is not online:\n%s", out)
	}

	const vm = "mover"
	// Processor compatibility: the generic CPU model a VM that moves between
	// unlike hosts runs with, which the guest sees.
	a.must("vm", "create", vm, "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--cpu-compat", "--start")
	a.waitHeartbeat(vm)
	before := a.vm(vm)
	if !before.CPUCompat {
		t.Errorf("hv vm show: cpu_compat false after --cpu-compat")
	}
	expect(t, a.exec(vm, "grep -m1 'model name' /proc/cpuinfo"), "QEMU Virtual CPU", "the guest's CPU model with --cpu-compat")
	a.exec(vm, "(i=0; while :; do i=$((i+1)); echo $i > /run/counter; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")
	a.exec(vm, "echo moved-with-me > /root/marker && sync")
	repo := t.TempDir()
	if full, _ := a.backup(vm, repo); full.Kind != "full" {
		t.Fatalf("first backup: kind %s, want full", full.Kind)
	}
	a.exec(vm, "dd if=/dev/urandom of=/root/after bs=64k count=4 2>/dev/null && sync")
	c1 := a.counter(vm)

	r := a.move(vm, "b")
	if !r.Live || r.DiskBytes == 0 || r.MemoryBytes == 0 {
		t.Fatalf("move: %+v, want a live move that sent disks and memory", r)
	}
	if out := a.fails("vm", "show", vm); !strings.Contains(out, "not found") && !strings.Contains(out, "no VM") {
		t.Errorf("hv vm show on the source after the move: %s", out)
	}
	got := b.vm(vm)
	if got.State != api.StateRunning || got.ID != before.ID {
		t.Fatalf("on the target: state %s ID %s, want Running with ID %s", got.State, got.ID, before.ID)
	}
	if len(got.NICs) != len(before.NICs) || (len(got.NICs) > 0 && got.NICs[0].MAC != before.NICs[0].MAC) {
		t.Errorf("NICs changed in the move: %+v -> %+v", before.NICs, got.NICs)
	}
	b.waitHeartbeat(vm)
	expect(t, b.exec(vm, "grep -m1 'model name' /proc/cpuinfo"), "QEMU Virtual CPU", "the guest's CPU model after the move")
	if c2 := b.counter(vm); c2 <= c1 {
		t.Errorf("guest counter %d before the move, %d after: the guest did not go on", c1, c2)
	}
	expect(t, b.exec(vm, "cat /root/marker"), "moved-with-me", "file written before the move")
	inc, _ := b.backup(vm, repo)
	if inc.Kind != "incremental" {
		t.Errorf("backup after the move: kind %s, want incremental (change tracking lost in the move)", inc.Kind)
	}

	// And back, after the guest wrote more on the target.
	b.exec(vm, "echo written-on-b > /root/second && sync")
	c3 := b.counter(vm)
	b.move(vm, "a")
	a.waitHeartbeat(vm)
	if c4 := a.counter(vm); c4 <= c3 {
		t.Errorf("guest counter %d before moving back, %d after", c3, c4)
	}
	expect(t, a.exec(vm, "cat /root/marker /root/second"), "moved-with-me\nwritten-on-b", "files after moving back")

	// A host that is not a peer is refused before anything moves.
	msg := a.fails("vm", "move", vm, "--to", "nowhere")
	expect(t, msg, "nowhere", "move to an unknown host")
	if v := a.vm(vm); v.State != api.StateRunning {
		t.Errorf("after a refused move: state %s, want Running", v.State)
	}

	// Quick migration: saved here, copied, restored there; the guest's
	// processes go on from where they stopped.
	c5 := a.counter(vm)
	q := a.move(vm, "b", "--quick")
	if !q.Quick || q.Live || q.FileBytes < 64<<20 {
		t.Fatalf("quick move: %+v, want a quick move that copied the saved memory", q)
	}
	if got := b.vm(vm); got.State != api.StateRunning {
		t.Fatalf("after the quick move: state %s on the target, want Running", got.State)
	}
	b.waitHeartbeat(vm)
	if c6 := b.counter(vm); c6 <= c5 {
		t.Errorf("guest counter %d before the quick move, %d after", c5, c6)
	}
	expect(t, b.exec(vm, "cat /root/marker /root/second"), "moved-with-me\nwritten-on-b", "files after the quick move")
}
