package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/hostlab"
)

// faultVM is the VM the fault tests move; it runs the guest counter and
// holds a marker file written before the first fault.
const faultVM = "faulty"

// moveFault is one fault in the middle of a move from lab host src to dst.
type moveFault struct {
	name string
	// slow is the link rate (bits/s) of the target during the move, so the
	// fault lands mid-mirror; bandwidth is the move's own --bandwidth.
	slow      int64
	bandwidth string
	// strike injects the fault once the disks mirror; it returns when the
	// hosts are back (links restored, hvds restarted).
	strike func(t *testing.T, lab *hostlab.Lab, src, dst int, op string)
	// want is text the failed move's error must hold.
	want string
	// at is the stage the fault waits for (default: the disks' mirror).
	at string
}

// TestMigrationFaults breaks moves in the middle, each a different way,
// and checks after each that nothing is lost: the VM runs on exactly one
// host (the source), the target keeps nothing of it, the guest goes on
// with its files, and the next move succeeds.
func TestMigrationFaults(t *testing.T) {
	ctx := context.Background()
	// h2's root is a 16 MiB tmpfs: the VM's disk (27 MiB of data) cannot fit.
	lab, h := newLab(t, []hostlab.HostSpec{{}, {}, {RootSize: 16 << 20}})
	if err := lab.PeerAll(ctx); err != nil {
		t.Fatal(err)
	}
	h[0].must("vm", "create", faultVM, "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--cpu-compat", "--start")
	h[0].waitHeartbeat(faultVM)
	h[0].exec(faultVM, "(i=0; while :; do i=$((i+1)); echo $i > /run/counter; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")
	h[0].exec(faultVM, "echo written-before > /root/marker && sync")

	faults := []moveFault{
		// The link is slowed so that the cancel lands while the disks mirror,
		// however fast this host copies 27 MiB.
		{name: "cancel", slow: 16 << 20, strike: cancelMove, want: "cancel"},
		// --bandwidth bounds the memory stream: the cancel lands during it, and
		// the next move must neither inherit its bandwidth nor hurt the guest.
		{name: "cancel-memory", bandwidth: "2M", at: "moving the memory", strike: cancelMove, want: "cancel"},
		{name: "target-killed", slow: 16 << 20, strike: killTargetDuringMove},
		{name: "source-hvd-killed", slow: 16 << 20, strike: killSourceHVDDuringMove},
	}
	src, dst := 0, 1
	for _, f := range faults {
		ok := t.Run(f.name, func(t *testing.T) {
			hs, hd := h[src].as(t), h[dst].as(t)
			if !runFault(t, lab, hs, hd, src, dst, f) {
				// The VM moves for real now, the roles swap for the next fault.
				if r := hs.move(faultVM, lab.Host(dst).Name); r.TotalTime > 60000 {
					t.Errorf("the move after the fault took %d ms: did it inherit the failed move's bandwidth?", r.TotalTime)
				}
				hd.waitHeartbeat(faultVM)
			}
			expect(t, hd.exec(faultVM, "cat /root/marker"), "written-before", "the marker after a good move")
		})
		if !ok {
			return
		}
		src, dst = dst, src
	}
	if !t.Run("target-disk-full", func(t *testing.T) {
		hs, hd := h[src].as(t), h[2].as(t)
		c0 := hs.counter(faultVM)
		msg := hs.fails("vm", "move", faultVM, "--to", lab.Host(2).Name)
		t.Logf("move to a full disk: %s", strings.TrimSpace(msg))
		if !strings.Contains(msg, "space") {
			t.Errorf("move to a host whose disk fills: %q, want an error naming the lack of space", msg)
		}
		checkAfterFault(t, lab, hs, hd, src, 2, c0)
	}) {
		return
	}
	// Last: a cut link leaves the VM in doubt when the move does not fail.
	t.Run("link-cut", func(t *testing.T) {
		runFault(t, lab, h[src].as(t), h[dst].as(t), src, dst, moveFault{name: "link-cut", slow: 16 << 20, strike: cutLinkDuringMove})
	})
}

// as is the same host, failing t (a subtest) instead of its parent.
func (h *host) as(t *testing.T) *host {
	c := *h
	c.t = t
	return &c
}

// runFault starts a slow move, strikes once the disks mirror, and checks
// that the move failed and left everything as before. It reports whether
// the move succeeded all the same (an error, checked as a move).
func runFault(t *testing.T, lab *hostlab.Lab, hs, hd *host, src, dst int, f moveFault) bool {
	ctx := context.Background()
	c0 := hs.counter(faultVM)
	if f.slow > 0 {
		if err := lab.Rate(ctx, dst, f.slow); err != nil {
			t.Fatal(err)
		}
		defer lab.Rate(ctx, dst, 0)
	}
	args := []string{"vm", "move", faultVM, "--to", lab.Host(dst).Name, "--async", "-o", "json"}
	if f.bandwidth != "" {
		args = append(args, "--bandwidth", f.bandwidth)
	}
	op := opID(t, hs.must(args...))
	at := f.at
	if at == "" {
		at = "mirroring"
	}
	waitStage(t, hs, op, at, 60*time.Second)
	f.strike(t, lab, src, dst, op)
	end := waitOpEnd(t, hs, op, 2*time.Minute)
	t.Logf("the move ended %s: %s", end.Status, end.Error)
	if end.Status == "success" {
		t.Errorf("the move succeeded despite the fault")
		checkAfterFault(t, lab, hd, hs, dst, src, c0)
		return true
	}
	if f.want != "" && !strings.Contains(strings.ToLower(end.Status+" "+end.Error), f.want) {
		t.Errorf("the move ended %s %q, want it to say %q", end.Status, end.Error, f.want)
	}
	if f.slow > 0 {
		if err := lab.Rate(ctx, dst, 0); err != nil {
			t.Fatal(err)
		}
	}
	checkAfterFault(t, lab, hs, hd, src, dst, c0)
	return false
}

// checkAfterFault checks that a failed move left the VM as it was: running
// on the source alone, nothing of it on the target, the guest going on.
func checkAfterFault(t *testing.T, lab *hostlab.Lab, hs, hd *host, src, dst int, c0 int) {
	t.Helper()
	hs.waitFor(faultVM, time.Minute, "Running on the source", func(v api.VM) bool { return v.State == api.StateRunning })
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := leftOnTarget(hd, lab.Host(dst).Root)
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the target keeps the VM 30 s after the failed move: %s", left)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := len(qemuPIDs(lab.Host(src).Root + "/")); n != 1 {
		t.Errorf("QEMUs of the source: %d, want 1", n)
	}
	hs.waitHeartbeat(faultVM)
	if c1 := hs.counter(faultVM); c1 <= c0 {
		t.Errorf("guest counter %d before the fault, %d after: the guest did not go on", c0, c1)
	}
	expect(t, hs.exec(faultVM, "cat /root/marker"), "written-before", "the marker after the fault")
}

// leftOnTarget describes what of the VM the target holds: a VM, a QEMU,
// staging files; "" when nothing.
func leftOnTarget(hd *host, root string) string {
	var left []string
	if r := hd.hv("vm", "list", "-o", "json"); r.code != 0 {
		left = append(left, "hv vm list failed: "+r.stderr)
	} else if strings.Contains(r.stdout, faultVM) {
		left = append(left, "hv vm list: "+r.stdout)
	}
	if pids := qemuPIDs(root + "/"); len(pids) > 0 {
		left = append(left, fmt.Sprintf("QEMUs %v", pids))
	}
	for _, d := range []string{"incoming", "vms"} {
		if entries, _ := os.ReadDir(filepath.Join(root, d)); len(entries) > 0 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			left = append(left, fmt.Sprintf("%s/%s: %v", root, d, names))
		}
	}
	return strings.Join(left, "; ")
}

func opID(t *testing.T, out string) string {
	t.Helper()
	var op api.Operation
	if json.Unmarshal([]byte(out), &op) == nil && op.ID != "" {
		return op.ID
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("hv vm move --async printed no operation id")
	}
	return f[len(f)-1]
}

func showOp(t *testing.T, h *host, id string) api.Operation {
	t.Helper()
	var op api.Operation
	out := h.must("operation", "show", id, "-o", "json")
	if err := json.Unmarshal([]byte(out), &op); err != nil {
		t.Fatalf("hv operation show -o json: %v\n%s", err, out)
	}
	return op
}

func opDone(op api.Operation) bool {
	return op.Status == "success" || op.Status == "failure" || op.Status == "cancelled"
}

// waitStage waits until the operation's stage holds stage.
func waitStage(t *testing.T, h *host, id, stage string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		op := showOp(t, h, id)
		if op.Progress != nil && strings.Contains(op.Progress.Stage, stage) {
			t.Logf("the move is at %q (%d of %d %s)", op.Progress.Stage, op.Progress.Done, op.Progress.Total, op.Progress.Unit)
			return
		}
		if opDone(op) || time.Now().After(deadline) {
			t.Fatalf("the move did not reach %q: %s %q %+v", stage, op.Status, op.Error, op.Progress)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitOpEnd(t *testing.T, h *host, id string, d time.Duration) api.Operation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r := h.hv("operation", "show", id, "-o", "json")
		if r.code != 0 && strings.Contains(r.stderr, "not found") {
			// A restarted hvd forgot the operations of the one before.
			return api.Operation{ID: id, Status: "gone", Error: strings.TrimSpace(r.stderr)}
		}
		var op api.Operation
		if err := json.Unmarshal([]byte(r.stdout), &op); err != nil {
			t.Fatalf("hv operation show -o json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		if opDone(op) {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("the move did not end within %s of the fault: %s %+v", d, op.Status, op.Progress)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func cancelMove(t *testing.T, lab *hostlab.Lab, src, dst int, op string) {
	h := &host{t: t, socket: lab.Host(src).Socket}
	h.hv("operation", "cancel", op)
}

// cutLinkFailWithin is how soon a move must fail once the target is cut off.
const cutLinkFailWithin = 45 * time.Second

// cutLinkDuringMove cuts the target's link until the move fails, then
// restores it. A move that does not fail in cutLinkFailWithin is an error;
// the link comes back then, and the move ends as it may.
func cutLinkDuringMove(t *testing.T, lab *hostlab.Lab, src, dst int, op string) {
	ctx := context.Background()
	if err := lab.CutLink(ctx, dst); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lab.RestoreLink(ctx, dst); err != nil {
			t.Fatal(err)
		}
	}()
	hs := &host{t: t, socket: lab.Host(src).Socket}
	start := time.Now()
	for time.Since(start) < cutLinkFailWithin {
		if end := showOp(t, hs, op); opDone(end) {
			t.Logf("link cut: the move ended %s after %s", end.Status, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	end := showOp(t, hs, op)
	t.Errorf("link cut: the move is still %s at %+v %s after the cut, want it failed (restoring the link now)",
		end.Status, end.Progress, cutLinkFailWithin)
}

// killTargetDuringMove kills the target host (hvd and its QEMUs), then
// starts its hvd again, whose recovery must clean what arrived.
func killTargetDuringMove(t *testing.T, lab *hostlab.Lab, src, dst int, op string) {
	ctx := context.Background()
	if err := lab.Host(dst).KillHost(ctx); err != nil {
		t.Fatal(err)
	}
	waitOpEnd(t, &host{t: t, socket: lab.Host(src).Socket}, op, 2*time.Minute)
	if err := lab.Host(dst).StartHVD(ctx); err != nil {
		t.Fatal(err)
	}
}

// killSourceHVDDuringMove kills only the source's hvd (its QEMU goes on),
// then starts it again; its recovery must undo the move.
func killSourceHVDDuringMove(t *testing.T, lab *hostlab.Lab, src, dst int, op string) {
	ctx := context.Background()
	if err := lab.Host(src).KillHVD(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(qemuPIDs(lab.Host(src).Root + "/")); n != 1 {
		t.Errorf("after killing the source's hvd: %d QEMUs of it, want its one VM's", n)
	}
	if err := lab.Host(src).StartHVD(ctx); err != nil {
		t.Fatal(err)
	}
}
