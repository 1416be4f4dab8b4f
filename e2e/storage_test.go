package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
)

func (h *host) moveStorage(vm, to string, args ...string) api.MoveStorageResult {
	h.t.Helper()
	argv := append([]string{"vm", "move-storage", vm, "--to", to, "-o", "json"}, args...)
	out := h.must(argv...)
	var r api.MoveStorageResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		h.t.Fatalf("hv %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	h.t.Logf("moved the files of %s from %s to %s: renamed=%v quick=%v, %d bytes, downtime %d ms, total %d ms",
		vm, r.From, r.To, r.Renamed, r.Quick, r.Bytes, r.Downtime, r.TotalTime)
	return r
}

// TestMoveStorage moves a VM's files between the host's storage locations:
// running (quick: saved, moved, restored) to a location on another file
// system, then off to one on the same file system (a rename), and checks
// what a user would: the guest's processes go on, its files, checkpoints
// and change tracking (the next backup is incremental) come along, nothing
// is left behind, and a restarted hvd finds the VM where it went.
func TestMoveStorage(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "hve2e-storage-")
	if err != nil {
		t.Fatalf("this test needs a tmpfs at /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	os.Chmod(shm, 0o700)
	h := newHostFlags(t, "--storage", "shm="+shm, "--storage", "near=/tmp/hve2e-near-"+filepath.Base(shm))
	t.Cleanup(func() { os.RemoveAll("/tmp/hve2e-near-" + filepath.Base(shm)) })
	near := "/tmp/hve2e-near-" + filepath.Base(shm)

	const vm = "stored"
	h.bootTiny(vm)
	h.exec(vm, "echo kept > /root/marker && sync")
	h.exec(vm, "(i=0; while :; do i=$((i+1)); echo $i > /run/counter; sleep 0.1; done) </dev/null >/dev/null 2>&1 &")
	h.createCheckpoint(vm, "before", "--type", "production")
	repo := t.TempDir()
	if full, _ := h.backup(vm, repo); full.Kind != "full" {
		t.Fatalf("first backup: %s, want full", full.Kind)
	}
	if v := h.vm(vm); v.Storage != "default" {
		t.Fatalf("a VM created without --storage is in %q, want default", v.Storage)
	}

	msg := h.fails("vm", "move-storage", vm, "--to", "shm")
	expect(t, msg, "--quick", "a running VM's storage move without --quick")
	expect(t, h.fails("vm", "move-storage", vm, "--to", "nowhere"), "no storage location of this host", "an unknown location")

	c0 := h.counter(vm)
	r := h.moveStorage(vm, "shm", "--quick")
	if !r.Quick || r.Renamed || r.Bytes < 16<<20 || r.From != "default" || r.To != "shm" {
		t.Fatalf("quick move to another file system: %+v, want a copy of the disk and the saved memory", r)
	}
	v := h.waitHeartbeat(vm)
	if v.State != api.StateRunning || v.Storage != "shm" || !strings.HasPrefix(v.Directory, shm+"/") {
		t.Fatalf("after the move: state %s, storage %q, directory %s", v.State, v.Storage, v.Directory)
	}
	if c1 := h.counter(vm); c1 <= c0 {
		t.Errorf("guest counter %d before the move, %d after: the guest's processes did not go on", c0, c1)
	}
	expect(t, h.exec(vm, "cat /root/marker"), "kept", "a file written before the move")
	if cps := h.checkpoints(vm); len(cps) != 1 || cps[0].Name != "before" {
		t.Errorf("checkpoints after the move: %+v", cps)
	}
	h.exec(vm, "dd if=/dev/urandom of=/root/after bs=64k count=4 2>/dev/null && sync")
	if inc, _ := h.backup(vm, repo); inc.Kind != "incremental" {
		t.Errorf("backup after the move: %s, want incremental (change tracking lost)", inc.Kind)
	}
	if m, _ := filepath.Glob(filepath.Join(h.root, "vms", "*")); len(m) != 0 {
		t.Errorf("left in the default location: %v", m)
	}

	// Off: back by a copy, then to a location on the default's file
	// system by a rename.
	h.must("vm", "stop", vm)
	if r = h.moveStorage(vm, "default"); r.Renamed || r.Quick || r.Bytes < 16<<20 {
		t.Fatalf("move of an Off VM to another file system: %+v, want a copy", r)
	}
	if m, _ := filepath.Glob(filepath.Join(shm, "*")); len(m) != 0 {
		t.Errorf("left in shm: %v", m)
	}
	if r = h.moveStorage(vm, "near"); !r.Renamed || r.Quick {
		t.Fatalf("move of an Off VM on one file system: %+v, want a rename", r)
	}
	// A new hvd finds the VM where it went, and it boots from there.
	h.stopHVD()
	h.startHVD()
	if v := h.vm(vm); v.Storage != "near" || v.Directory != filepath.Join(near, vm) {
		t.Fatalf("after hvd's restart: storage %q, directory %s", v.Storage, v.Directory)
	}
	h.must("vm", "start", vm)
	h.waitHeartbeat(vm)
	expect(t, h.exec(vm, "cat /root/marker"), "kept", "the marker after a restart from the new location")
	if inc, _ := h.backup(vm, repo); inc.Kind != "incremental" {
		t.Errorf("backup after two more moves and a boot: %s, want incremental", inc.Kind)
	}
	if info := h.must("host", "info"); !strings.Contains(info, "near") || !strings.Contains(info, shm) {
		t.Errorf("hv host info does not list the storage locations:\n%s", info)
	}
}
