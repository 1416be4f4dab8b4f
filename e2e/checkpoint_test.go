package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// Checkpoints as a user sees them: what the guest finds in its files after a
// checkpoint is applied, deleted, exported or survives a crash of hvd.

// bootTiny creates a generation 1 VM on the tiny guest's disk (ext4 root on
// /dev/vda2, mounted rw at /) and waits for its agent.
func (h *host) bootTiny(name string) api.VM {
	h.t.Helper()
	h.must("vm", "create", name, "--generation", "1", "--memory", "256M", "--image", guest("tiny-bios.qcow2"), "--start")
	return h.waitHeartbeat(name)
}

// execRetry runs a shell command in the guest, retrying while the agent is not
// yet reachable (just after a restore, a restart of hvd or a thaw), and returns
// its stdout.
func (h *host) execRetry(name, script string) string {
	h.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := h.hv("vm", "exec", name, "--timeout", "30s", "--", "/bin/sh", "-c", script)
		if r.code == 0 {
			return r.stdout
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("VM %s: %q kept failing for 90s: exit %d\nstdout: %s\nstderr: %s", name, script, r.code, r.stdout, r.stderr)
		}
		time.Sleep(time.Second)
	}
}

// waitUsable waits until the guest answers and can write to its root file
// system (it is not left frozen).
func (h *host) waitUsable(name string) {
	h.t.Helper()
	h.waitHeartbeat(name)
	expect(h.t, h.execRetry(name, "echo probe > /root/.hv-probe && sync && echo writable"), "writable", "a write in the guest")
}

// createCheckpoint runs hv checkpoint create VM ARGS... -o json.
func (h *host) createCheckpoint(vm string, args ...string) api.Checkpoint {
	h.t.Helper()
	argv := append([]string{"checkpoint", "create", vm}, args...)
	argv = append(argv, "-o", "json")
	out := h.must(argv...)
	var c api.Checkpoint
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		h.t.Fatalf("hv %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return c
}

// checkpoints lists a VM's checkpoints.
func (h *host) checkpoints(vm string) []api.Checkpoint {
	h.t.Helper()
	out := h.must("checkpoint", "list", vm, "-o", "json")
	var cs []api.Checkpoint
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		h.t.Fatalf("hv checkpoint list -o json: %v\n%s", err, out)
	}
	return cs
}

func findCheckpoint(cs []api.Checkpoint, name string) (api.Checkpoint, bool) {
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return api.Checkpoint{}, false
}

func checkpointNames(cs []api.Checkpoint) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}

// sigScript prints what a test can tell apart in the guest's root file system:
// /gen.txt, /now.txt and every /f-NAME with its content. It syncs and drops
// the page cache first, so that what it prints was read from the virtual disk
// (through the VM's chain of overlays), not from the guest's memory.
const sigScript = `sync; echo 3 > /proc/sys/vm/drop_caches; ` +
	`echo "gen=$(cat /gen.txt 2>/dev/null)"; echo "now=$(cat /now.txt 2>/dev/null)"; ` +
	`for f in /f-*; do [ -e "$f" ] && echo "$f=$(cat "$f")"; done; true`

// guestSig is the content of the guest's files, read from its disk.
func (h *host) guestSig(vm string) string {
	h.t.Helper()
	return h.execRetry(vm, sigScript)
}

// mark writes name into /gen.txt and into a file of its own, /f-NAME, which
// nothing overwrites later: a checkpoint's descendants keep reading it from
// the checkpoint's image.
func (h *host) mark(vm, name string) {
	h.t.Helper()
	h.exec(vm, fmt.Sprintf("printf %%s %s > /gen.txt && printf %%s %s > /f-%s && sync", name, name, name))
}

// markNow changes the VM's current state (below its current checkpoint) only.
func (h *host) markNow(vm, value string) {
	h.t.Helper()
	h.exec(vm, fmt.Sprintf("printf %%s %s > /now.txt && sync", value))
}

// applyCheck applies a checkpoint and checks what the guest then holds: a
// checkpoint with memory leaves the VM Running where it was; one without
// leaves it Off, and it boots cold from the checkpoint's disks.
func (h *host) applyCheck(vm, name, want string) {
	h.t.Helper()
	c, ok := findCheckpoint(h.checkpoints(vm), name)
	if !ok {
		h.t.Fatalf("VM %s has no checkpoint %q to apply", vm, name)
	}
	h.must("checkpoint", "apply", vm, name)
	v := h.vm(vm)
	if c.HasMemory {
		if v.State != api.StateRunning {
			h.t.Fatalf("after applying %s (with memory): VM %s is %s (%s), want Running", name, vm, v.State, v.StateReason)
		}
	} else {
		if v.State != api.StateOff {
			h.t.Fatalf("after applying %s (%s, no memory): VM %s is %s, want Off", name, c.Type, vm, v.State)
		}
		h.must("vm", "start", vm)
	}
	h.waitHeartbeat(vm)
	if got := h.guestSig(vm); got != want {
		h.t.Fatalf("after applying %s, the guest's files are\n%s\nwant\n%s", name, got, want)
	}
	for _, c := range h.checkpoints(vm) {
		if c.Current != (c.Name == name) {
			h.t.Fatalf("after applying %s: checkpoint %s has current=%v", name, c.Name, c.Current)
		}
	}
}

// checkVMDir checks a VM's directory as a crash or a failed operation must
// leave it: no operation under way in checkpoints.json, every file that
// checkpoints.json and config.json name exists, and every disk image
// (*.qcow2) and memory state (*.vmstate) in the directory is one of them.
func checkVMDir(dir string) error {
	named := map[string]string{} // file -> who names it
	data, err := os.ReadFile(filepath.Join(dir, "checkpoints.json"))
	switch {
	case err == nil:
		var f struct {
			Tree struct {
				Checkpoints []struct {
					Name      string            `json:"name"`
					Disks     map[string]string `json:"disks"`
					StateFile string            `json:"state_file"`
				} `json:"checkpoints"`
				Active  map[string]string `json:"active"`
				Journal json.RawMessage   `json:"journal"`
			} `json:"tree"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			return fmt.Errorf("checkpoints.json: %v", err)
		}
		if j := strings.TrimSpace(string(f.Tree.Journal)); j != "" && j != "null" {
			return fmt.Errorf("checkpoints.json still records an operation under way: %s", j)
		}
		for _, c := range f.Tree.Checkpoints {
			for d, file := range c.Disks {
				named[file] = "checkpoint " + c.Name + " disk " + d
			}
			if c.StateFile != "" {
				named[c.StateFile] = "checkpoint " + c.Name + " state"
			}
		}
		for d, file := range f.Tree.Active {
			named[file] = "active disk " + d
		}
	case !os.IsNotExist(err):
		return err
	}
	data, err = os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return err
	}
	var cfg struct {
		VM struct {
			Disks []struct {
				Name string `json:"name"`
				File string `json:"file"`
			} `json:"disks"`
		} `json:"vm"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("config.json: %v", err)
	}
	for _, d := range cfg.VM.Disks {
		named[d.File] = "config disk " + d.Name
	}
	var problems []string
	for file, who := range named {
		if _, err := os.Stat(filepath.Join(dir, file)); err != nil {
			problems = append(problems, fmt.Sprintf("%s names %s: %v", who, file, err))
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		n := e.Name()
		if (strings.HasSuffix(n, ".qcow2") || strings.HasSuffix(n, ".vmstate")) && named[n] == "" {
			problems = append(problems, "orphan file "+n)
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// mustCleanDir fails the test unless checkVMDir passes.
func mustCleanDir(t *testing.T, dir, what string) {
	t.Helper()
	if err := checkVMDir(dir); err != nil {
		t.Fatalf("%s: VM directory %s: %v (files: %v)", what, dir, err, dirNames(dir))
	}
}

// waitCleanDir waits until checkVMDir passes: after a restart hvd may let a
// live merge QEMU still runs finish before it completes the operation.
func (h *host) waitCleanDir(dir, what string) {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := checkVMDir(dir)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: VM directory %s not consistent within 2 minutes: %v (files: %v)", what, dir, err, dirNames(dir))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func dirNames(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// guestUptime is the guest's /proc/uptime.
func (h *host) guestUptime(vm string) float64 {
	h.t.Helper()
	out := strings.Fields(h.execRetry(vm, "cat /proc/uptime"))
	if len(out) == 0 {
		h.t.Fatalf("guest /proc/uptime is empty")
	}
	u, err := strconv.ParseFloat(out[0], 64)
	if err != nil {
		h.t.Fatalf("guest /proc/uptime: %q", out)
	}
	return u
}

// waitNoQEMU waits until the host's QEMUs are gone.
func (h *host) waitNoQEMU(what string) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(qemuPIDs(h.root)) != 0 {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: QEMU still runs: %v", what, qemuPIDs(h.root))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A production checkpoint of a Gen 2 VM holds what the guest wrote but had not
// flushed, and a database-style log is complete in it, line by line.
func TestProductionCheckpoint(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "g2"
	h.must("vm", "create", vm, "--generation", "2", "--memory", "256M", "--image", guest("tiny-uefi.qcow2"), "--start")
	if v := h.waitHeartbeat(vm); v.CheckpointType != api.CheckpointProduction {
		t.Fatalf("a new VM's checkpoint type is %q, want %q", v.CheckpointType, api.CheckpointProduction)
	}

	// Written, not synced: only the guest's freeze puts it on the disk.
	h.exec(vm, "echo first > /data.txt")
	cp := h.createCheckpoint(vm, "cp1")
	if cp.Name != "cp1" || cp.Type != api.CheckpointProduction || cp.FellBack || cp.HasMemory || !cp.Current || cp.Parent != "" {
		t.Fatalf("production checkpoint: %+v", cp)
	}
	if cp.FrozenSeconds <= 0 || cp.FrozenSeconds >= 10 {
		t.Fatalf("production checkpoint froze the guest for %.3fs, want more than 0 and less than 10", cp.FrozenSeconds)
	}
	if len(cp.Disks) == 0 {
		t.Fatalf("production checkpoint holds no disks: %+v", cp)
	}
	h.exec(vm, "echo second > /data.txt && sync && rm /data.txt && sync")
	h.must("checkpoint", "apply", vm, "cp1")
	if v := h.vm(vm); v.State != api.StateOff {
		t.Fatalf("after applying a production checkpoint: %s (%s), want Off", v.State, v.StateReason)
	}
	h.waitNoQEMU("after applying a production checkpoint")
	h.must("vm", "start", vm)
	h.waitHeartbeat(vm)
	if got := h.execRetry(vm, "cat /data.txt"); got != "first\n" {
		t.Fatalf("/data.txt after applying cp1: %q, want %q", got, "first\n")
	}

	// A log appended with an fsync after each line, as a database writes its
	// journal: the checkpoint holds whole lines, in order, at least those
	// already synced when it was taken.
	h.exec(vm, `rm -f /log.txt; sync; (i=0; while :; do i=$((i+1)); echo "line $i" >> /log.txt; sync /log.txt 2>/dev/null || sync; done) </dev/null >/dev/null 2>&1 &`)
	seen := 0
	deadline := time.Now().Add(2 * time.Minute)
	for seen < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the guest's log loop wrote %d lines in 2 minutes", seen)
		}
		time.Sleep(500 * time.Millisecond)
		n, err := strconv.Atoi(strings.TrimSpace(h.exec(vm, "cat /log.txt 2>/dev/null | wc -l")))
		if err != nil {
			t.Fatalf("wc -l /log.txt: %v", err)
		}
		seen = n
	}
	cp2 := h.createCheckpoint(vm, "cp2")
	if cp2.Type != api.CheckpointProduction || cp2.FellBack || cp2.Parent != "cp1" {
		t.Fatalf("production checkpoint under a busy writer: %+v", cp2)
	}
	h.must("checkpoint", "apply", vm, "cp2")
	if v := h.vm(vm); v.State != api.StateOff {
		t.Fatalf("after applying cp2: %s, want Off", v.State)
	}
	h.must("vm", "start", vm)
	h.waitHeartbeat(vm)
	log := h.execRetry(vm, "cat /log.txt")
	if !strings.HasSuffix(log, "\n") {
		t.Fatalf("/log.txt in the checkpoint ends in a partial line: ...%q", log[max(0, len(log)-40):])
	}
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i+1) {
			t.Fatalf("/log.txt line %d is %q, want %q", i+1, l, fmt.Sprintf("line %d", i+1))
		}
	}
	if len(lines) < seen {
		t.Fatalf("/log.txt in the checkpoint has %d lines; %d were synced before it was taken", len(lines), seen)
	}
	h.must("vm", "kill", vm)
}

// A standard checkpoint keeps memory: applying it resumes the guest where it
// was, without a reboot, running or paused as it was taken.
func TestStandardCheckpoint(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "std"
	h.bootTiny(vm)
	value := fmt.Sprintf("v1-%d", time.Now().UnixNano())
	h.exec(vm, "echo "+value+" > /dev/shm/v")

	gPre := h.guestUptime(vm)
	hPre := h.vm(vm).UptimeSeconds
	s1 := h.createCheckpoint(vm, "s1", "--type", "standard")
	if s1.Type != api.CheckpointStandard || !s1.HasMemory || s1.FellBack || !s1.Current {
		t.Fatalf("standard checkpoint: %+v", s1)
	}
	if v := h.vm(vm); v.State != api.StateRunning {
		t.Fatalf("after a standard checkpoint the VM is %s", v.State)
	}
	gCP := h.guestUptime(vm)
	h.exec(vm, "echo changed > /dev/shm/v")
	// Let the guest's clock move well past the checkpoint.
	deadline := time.Now().Add(2 * time.Minute)
	for h.guestUptime(vm) < gCP+10 {
		if time.Now().After(deadline) {
			t.Fatal("the guest's uptime did not advance 10s in 2 minutes")
		}
		time.Sleep(time.Second)
	}
	gBefore := h.guestUptime(vm)
	hBefore := h.vm(vm).UptimeSeconds

	h.must("checkpoint", "apply", vm, "s1")
	if v := h.vm(vm); v.State != api.StateRunning {
		t.Fatalf("after applying a standard checkpoint: %s (%s), want Running", v.State, v.StateReason)
	}
	h.waitHeartbeat(vm)
	out := h.execRetry(vm, "cut -d' ' -f1 /proc/uptime; cat /dev/shm/v")
	hAfter := h.vm(vm).UptimeSeconds
	f := strings.Fields(out)
	if len(f) != 2 || f[1] != value {
		t.Fatalf("after applying s1, uptime and /dev/shm/v: %q, want the value %q (memory, no reboot)", out, value)
	}
	gAfter, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("guest uptime %q", f[0])
	}
	// The guest's clock goes on from the checkpoint: not from 0 (a reboot),
	// not from where it was before the apply.
	if gAfter < gPre || gAfter >= gBefore {
		t.Fatalf("guest uptime after apply %.1fs; at the checkpoint %.1f-%.1fs, before the apply %.1fs", gAfter, gPre, gCP, gBefore)
	}
	if hAfter < hPre-2 || hAfter >= hBefore {
		t.Fatalf("hv's uptime after apply %.1fs; at the checkpoint %.1fs, before the apply %.1fs", hAfter, hPre, hBefore)
	}

	// Taken while paused, it comes back paused.
	h.exec(vm, "echo v3 > /dev/shm/v")
	h.must("vm", "pause", vm)
	p1 := h.createCheckpoint(vm, "p1", "--type", "standard")
	if !p1.HasMemory || p1.Parent != "s1" {
		t.Fatalf("checkpoint of a paused VM: %+v", p1)
	}
	if v := h.vm(vm); v.State != api.StatePaused {
		t.Fatalf("after a checkpoint of a paused VM: %s, want Paused", v.State)
	}
	h.must("vm", "resume", vm)
	h.waitHeartbeat(vm)
	h.execRetry(vm, "echo v4 > /dev/shm/v")
	h.must("checkpoint", "apply", vm, "p1")
	if v := h.vm(vm); v.State != api.StatePaused {
		t.Fatalf("after applying a checkpoint taken while paused: %s, want Paused", v.State)
	}
	h.must("vm", "resume", vm)
	h.waitHeartbeat(vm)
	if got := strings.TrimSpace(h.execRetry(vm, "cat /dev/shm/v")); got != "v3" {
		t.Fatalf("/dev/shm/v after applying p1: %q, want v3", got)
	}

	// --save-current keeps what would be dropped as a checkpoint of its own.
	h.exec(vm, "echo v5 > /dev/shm/v && echo disk5 > /disk.txt && sync")
	h.must("checkpoint", "apply", vm, "s1", "--save-current", "keep")
	if v := h.vm(vm); v.State != api.StateRunning {
		t.Fatalf("after applying s1 with --save-current: %s", v.State)
	}
	h.waitHeartbeat(vm)
	if got := strings.TrimSpace(h.execRetry(vm, "cat /dev/shm/v")); got != value {
		t.Fatalf("/dev/shm/v after applying s1 again: %q, want %q", got, value)
	}
	keep, ok := findCheckpoint(h.checkpoints(vm), "keep")
	if !ok || keep.Parent != "p1" || keep.Current {
		t.Fatalf("--save-current keep: %+v (found %v); want a checkpoint under p1, not current", keep, ok)
	}
	h.must("checkpoint", "apply", vm, "keep")
	if keep.HasMemory {
		if v := h.vm(vm); v.State != api.StateRunning {
			t.Fatalf("after applying keep: %s", v.State)
		}
	} else {
		if v := h.vm(vm); v.State != api.StateOff {
			t.Fatalf("after applying keep (no memory): %s, want Off", v.State)
		}
		h.must("vm", "start", vm)
	}
	h.waitHeartbeat(vm)
	if got := strings.TrimSpace(h.execRetry(vm, "cat /disk.txt")); got != "disk5" {
		t.Fatalf("/disk.txt after applying keep: %q, want disk5", got)
	}
	if keep.HasMemory {
		if got := strings.TrimSpace(h.execRetry(vm, "cat /dev/shm/v")); got != "v5" {
			t.Fatalf("/dev/shm/v after applying keep: %q, want v5", got)
		}
	}
	mustCleanDir(t, h.vm(vm).Directory, "after the standard checkpoints")
	h.must("vm", "kill", vm)
}

// mentionsFreeze tells whether an error or reason names why the guest could
// not freeze: its backup service or the freeze itself.
func mentionsFreeze(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "backup") || strings.Contains(s, "freez")
}

// setCheckpointType sets a VM's checkpoint type. The setting is meant to be
// accepted while the VM runs; should hvd ask for the VM to be stopped, the
// test does that and starts it again.
func (h *host) setCheckpointType(vm, typ string) {
	h.t.Helper()
	r := h.hv("vm", "set", vm, "--checkpoint-type", typ)
	if r.code != 0 {
		if !strings.Contains(r.stderr, "stop") {
			h.t.Fatalf("hv vm set %s --checkpoint-type %s: exit %d: %s", vm, typ, r.code, r.stderr)
		}
		h.t.Logf("hv vm set --checkpoint-type refused while running (%s); stopping first", strings.TrimSpace(r.stderr))
		h.must("vm", "stop", vm)
		h.must("vm", "set", vm, "--checkpoint-type", typ)
		h.must("vm", "start", vm)
		h.waitHeartbeat(vm)
	}
	if got := h.vm(vm).CheckpointType; got != typ {
		h.t.Fatalf("after setting the checkpoint type to %s, hv vm show says %q", typ, got)
	}
}

// A guest that cannot freeze gets a standard checkpoint instead of a
// production one, and is told; production-only and disabled refuse cleanly.
func TestCheckpointFallback(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "fb"
	v := h.bootTiny(vm)
	dir := v.Directory
	h.must("vm", "integration", vm, "--disable", "backup")
	value := fmt.Sprintf("fb-%d", time.Now().UnixNano())
	h.exec(vm, "echo "+value+" > /dev/shm/v")

	r := h.hv("checkpoint", "create", vm, "a")
	if r.code != 0 {
		t.Fatalf("production checkpoint with backup disabled: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	said := r.stdout + r.stderr
	if !strings.Contains(strings.ToLower(said), "production") || !mentionsFreeze(said) {
		t.Fatalf("hv checkpoint create did not say that production was not possible and why:\n%s", said)
	}
	a, ok := findCheckpoint(h.checkpoints(vm), "a")
	if !ok || a.Type != api.CheckpointStandard || !a.FellBack || !a.HasMemory || !mentionsFreeze(a.FallbackReason) {
		t.Fatalf("fallback checkpoint: %+v (found %v); want standard, fell_back, with memory, and a reason naming the freeze", a, ok)
	}

	before := dirNames(dir)
	msg := h.fails("checkpoint", "create", vm, "po", "--type", "production-only")
	if !mentionsFreeze(msg) {
		t.Fatalf("production-only with backup disabled: error %q does not say why (backup service, freeze)", msg)
	}
	if names := checkpointNames(h.checkpoints(vm)); strings.Join(names, ",") != "a" {
		t.Fatalf("after a refused production-only checkpoint: %v, want only a", names)
	}
	if after := dirNames(dir); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("a refused checkpoint changed the VM's directory:\nbefore %v\nafter  %v", before, after)
	}
	mustCleanDir(t, dir, "after a refused production-only checkpoint")
	h.exec(vm, "echo ok > /root/w && sync") // not left frozen

	// Checkpoints disabled: none of any type.
	h.setCheckpointType(vm, api.CheckpointDisabled)
	expect(t, h.fails("checkpoint", "create", vm, "d1"), "disabled", "checkpoint of a VM with checkpoints disabled")
	expect(t, h.fails("checkpoint", "create", vm, "d2", "--type", "standard"), "disabled", "standard checkpoint of a VM with checkpoints disabled")

	// The VM's setting is what a checkpoint takes when none is named.
	h.setCheckpointType(vm, api.CheckpointProductionOnly)
	if msg := h.fails("checkpoint", "create", vm, "d3"); !mentionsFreeze(msg) {
		t.Fatalf("checkpoint of a production-only VM with backup disabled: error %q does not say why", msg)
	}
	if names := checkpointNames(h.checkpoints(vm)); strings.Join(names, ",") != "a" {
		t.Fatalf("after refused checkpoints: %v, want only a", names)
	}
	mustCleanDir(t, dir, "after refused checkpoints")
	h.setCheckpointType(vm, api.CheckpointStandard)
	if b := h.createCheckpoint(vm, "b"); b.Type != api.CheckpointStandard || b.FellBack || !b.HasMemory {
		t.Fatalf("checkpoint of a VM set to standard: %+v", b)
	}
	h.must("vm", "integration", vm, "--enable", "backup")
	h.setCheckpointType(vm, api.CheckpointProduction)
	if c := h.createCheckpoint(vm, "c"); c.Type != api.CheckpointProduction || c.FellBack || c.FrozenSeconds <= 0 {
		t.Fatalf("production checkpoint with backup enabled again: %+v", c)
	}

	// The fallback is a real standard checkpoint: it resumes with its memory.
	h.exec(vm, "echo changed > /dev/shm/v")
	h.must("checkpoint", "apply", vm, "a")
	if v := h.vm(vm); v.State != api.StateRunning {
		t.Fatalf("after applying the fallback checkpoint: %s, want Running", v.State)
	}
	h.waitHeartbeat(vm)
	if got := strings.TrimSpace(h.execRetry(vm, "cat /dev/shm/v")); got != value {
		t.Fatalf("/dev/shm/v after applying the fallback checkpoint: %q, want %q", got, value)
	}
	mustCleanDir(t, dir, "at the end")
	h.must("vm", "kill", vm)
}

// cpModel is what a test expects of a VM's checkpoint tree.
type cpModel struct {
	parent  map[string]string // name -> parent's name ("" for a root)
	sig     map[string]string // name -> the guest's files in it (guestSig)
	current string            // "" none, "?" not known
}

func newCPModel() *cpModel {
	return &cpModel{parent: map[string]string{}, sig: map[string]string{}}
}

// remove drops name (and its descendants with subtree) as hv checkpoint delete
// does: the children of a deleted checkpoint move up to its parent.
func (m *cpModel) remove(name string, subtree bool) {
	up := m.parent[name]
	gone := map[string]bool{name: true}
	if subtree {
		for changed := true; changed; {
			changed = false
			for n, p := range m.parent {
				if gone[p] && !gone[n] {
					gone[n], changed = true, true
				}
			}
		}
	}
	for n := range gone {
		delete(m.parent, n)
		delete(m.sig, n)
	}
	if !subtree {
		for n, p := range m.parent {
			if p == name {
				m.parent[n] = up
			}
		}
	}
	if gone[m.current] {
		m.current = "?"
	}
}

func (m *cpModel) names() []string {
	var out []string
	for n := range m.parent {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// check compares hv checkpoint list with the model.
func (m *cpModel) check(h *host, vm, what string) {
	h.t.Helper()
	list := h.checkpoints(vm)
	if got, want := checkpointNames(list), m.names(); strings.Join(got, ",") != strings.Join(want, ",") {
		h.t.Fatalf("%s: checkpoints %v, want %v", what, got, want)
	}
	for _, c := range list {
		if c.Parent != m.parent[c.Name] {
			h.t.Fatalf("%s: checkpoint %s has parent %q, want %q", what, c.Name, c.Parent, m.parent[c.Name])
		}
		if m.current != "?" && c.Current != (c.Name == m.current) {
			h.t.Fatalf("%s: checkpoint %s has current=%v; the current one is %q", what, c.Name, c.Current, m.current)
		}
	}
}

// A tree of checkpoints with two branches: each checkpoint gives back its own
// files when applied, and deleting checkpoints in any order, while the VM
// runs, changes neither the others nor what the guest has now.
func TestCheckpointTree(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "tree"
	dir := h.bootTiny(vm).Directory
	m := newCPModel()

	take := func(name, typ string) {
		t.Helper()
		h.mark(vm, name)
		m.sig[name] = h.guestSig(vm)
		c := h.createCheckpoint(vm, name, "--type", typ)
		if c.Name != name || c.Type != typ || !c.Current {
			t.Fatalf("checkpoint %s: %+v", name, c)
		}
		if want := m.current; c.Parent != want {
			t.Fatalf("checkpoint %s has parent %q, want the current checkpoint %q", name, c.Parent, want)
		}
		m.parent[name] = m.current
		m.current = name
	}
	apply := func(name string) {
		t.Helper()
		h.applyCheck(vm, name, m.sig[name])
		m.current = name
	}
	applyAll := func(order ...string) {
		t.Helper()
		sorted := append([]string(nil), order...)
		sort.Strings(sorted)
		if strings.Join(sorted, ",") != strings.Join(m.names(), ",") {
			t.Fatalf("test bug: apply order %v is not the checkpoints %v", order, m.names())
		}
		for _, n := range order {
			apply(n)
		}
	}
	step := 0
	del := func(name string, subtree bool, thenApply ...string) {
		t.Helper()
		step++
		h.markNow(vm, fmt.Sprintf("now-%d", step))
		now := h.guestSig(vm)
		before := h.vm(vm)
		args := []string{"checkpoint", "delete", vm, name}
		if subtree {
			args = append(args, "--subtree")
		}
		h.must(args...)
		m.remove(name, subtree)
		what := "after hv " + strings.Join(args, " ")
		if v := h.vm(vm); v.State != api.StateRunning || v.PID != before.PID {
			t.Fatalf("%s: VM %s pid %d, want Running in the same QEMU (pid %d)", what, v.State, v.PID, before.PID)
		}
		m.check(h, vm, what)
		if got := h.guestSig(vm); got != now {
			t.Fatalf("%s: what the guest has now changed:\n%s\nwant\n%s", what, got, now)
		}
		mustCleanDir(t, dir, what)
		applyAll(thenApply...)
	}

	// A -> B -> C
	//        \-> D -> E    (C production; the others standard)
	take("A", api.CheckpointStandard)
	take("B", api.CheckpointStandard)
	take("C", api.CheckpointProduction)
	apply("B")
	take("D", api.CheckpointStandard)
	take("E", api.CheckpointStandard)
	m.check(h, vm, "the first tree")
	h.must("checkpoint", "rename", vm, "D", "dee")
	m.parent["dee"], m.sig["dee"] = m.parent["D"], m.sig["D"]
	delete(m.parent, "D")
	delete(m.sig, "D")
	m.parent["E"] = "dee"
	expect(t, h.fails("checkpoint", "rename", vm, "dee", "A"), "exist", "rename to a name in use")
	m.check(h, vm, "after renames")
	applyAll("A", "C", "B", "dee", "E")

	// Order one: a middle checkpoint with two children, the current one, the
	// root, a checkpoint on the other branch, the last one.
	del("B", false, "A", "C", "dee", "E")
	del("E", false, "dee", "C", "A")
	del("A", false, "C", "dee")
	del("C", false, "dee")
	del("dee", false)
	if cs := h.checkpoints(vm); len(cs) != 0 {
		t.Fatalf("after deleting every checkpoint: %v", checkpointNames(cs))
	}

	// P -> Q -> R
	//        \-> S -> T    (all standard)
	m.current = ""
	take("P", api.CheckpointStandard)
	take("Q", api.CheckpointStandard)
	take("R", api.CheckpointStandard)
	apply("Q")
	take("S", api.CheckpointStandard)
	take("T", api.CheckpointStandard)
	m.check(h, vm, "the second tree")

	// Order two: the root above the current one, a whole branch beside it,
	// then a subtree holding the current checkpoint.
	del("P", false, "T", "S", "Q", "R")
	del("S", true, "R", "Q")
	del("Q", true)
	if cs := h.checkpoints(vm); len(cs) != 0 {
		t.Fatalf("after deleting every checkpoint: %v", checkpointNames(cs))
	}
	h.must("vm", "kill", vm)
}

// crashAt makes hvd die at a crash point during the hv command args, then
// starts a fresh hvd, as after a real crash. The VM's QEMU runs on.
func (h *host) crashAt(point string, args ...string) {
	h.t.Helper()
	h.killHVD()
	h.startHVD("HV_TEST_CRASH_AT=" + point)
	r := h.hv(args...)
	h.waitHVD(60 * time.Second)
	if h.cmd.ProcessState == nil {
		h.t.Fatalf("hvd did not die at %s; hv %s: exit %d\n%s%s", point, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if r.code == 0 {
		h.t.Fatalf("hv %s succeeded although hvd died at %s", strings.Join(args, " "), point)
	}
	h.startHVD()
}

// hvd dies at each step of create, apply and delete; the next hvd leaves the
// VM running, the tree whole, every checkpoint good and no file behind.
func TestCheckpointCrashRecovery(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "cr"
	dir := h.bootTiny(vm).Directory
	want := map[string]string{} // the checkpoints that must exist, with the guest's files in each

	h.mark(vm, "base")
	want["base"] = h.guestSig(vm)
	h.createCheckpoint(vm, "base", "--type", "standard")

	// recovered checks the VM and its tree after a crash at point. The
	// checkpoint maybe may exist or not; it reports which.
	recovered := func(point, maybe string) bool {
		t.Helper()
		h.waitFor(vm, 2*time.Minute, "Running after a crash at "+point, func(v api.VM) bool { return v.State == api.StateRunning })
		h.waitUsable(vm)
		h.waitCleanDir(dir, "after a crash at "+point)
		found := false
		names := map[string]bool{}
		for _, c := range h.checkpoints(vm) {
			names[c.Name] = true
			switch _, ok := want[c.Name]; {
			case c.Name == maybe:
				found = true
			case !ok:
				t.Fatalf("after a crash at %s: unexpected checkpoint %+v", point, c)
			}
		}
		for n := range want {
			if !names[n] {
				t.Fatalf("after a crash at %s: checkpoint %s is gone", point, n)
			}
		}
		return found
	}
	// applyAll applies every checkpoint, last one last.
	applyAll := func(point, last string) {
		t.Helper()
		var order []string
		for n := range want {
			if n != last {
				order = append(order, n)
			}
		}
		sort.Strings(order)
		if _, ok := want[last]; ok {
			order = append(order, last)
		}
		for _, n := range order {
			h.applyCheck(vm, n, want[n])
		}
		mustCleanDir(t, dir, "after applying every checkpoint past a crash at "+point)
	}
	sameNow := func(point, now string) {
		t.Helper()
		if got := h.guestSig(vm); got != now {
			t.Fatalf("after a crash at %s the guest's files are\n%s\nwant what it had\n%s", point, got, now)
		}
	}

	// Create, prepared: the guest is frozen, its new overlays exist, nothing uses them.
	h.mark(vm, "p1")
	now := h.guestSig(vm)
	h.crashAt("checkpoint:create-prepared", "checkpoint", "create", vm, "p1", "--type", "production")
	if recovered("create-prepared", "p1") {
		want["p1"] = now
	}
	sameNow("create-prepared", now)
	applyAll("create-prepared", "")

	// Create, switched: the guest writes to the new overlays; its memory may
	// not be saved yet.
	h.mark(vm, "p2")
	now = h.guestSig(vm)
	h.crashAt("checkpoint:create-switched", "checkpoint", "create", vm, "p2", "--type", "standard")
	if recovered("create-switched", "p2") {
		want["p2"] = now
	}
	sameNow("create-switched", now)
	applyAll("create-switched", "")

	// Apply, prepared: either nothing happened or the apply completed.
	h.markNow(vm, "n3")
	now = h.guestSig(vm)
	h.crashAt("checkpoint:apply-prepared", "checkpoint", "apply", vm, "base")
	// The apply had turned the VM off before hvd died, and the apply is
	// undone: the VM is Off on its disks from before, and starts.
	if v := h.waitFor(vm, 2*time.Minute, "settled after a crash at apply-prepared", func(v api.VM) bool {
		return v.State == api.StateOff || v.State == api.StateRunning
	}); v.State == api.StateOff {
		h.must("vm", "start", vm)
	}
	recovered("apply-prepared", "")
	if got := h.guestSig(vm); got != now && got != want["base"] {
		t.Fatalf("after a crash at apply-prepared the guest's files are\n%s\nwant those before the apply\n%s\nor those of base\n%s", got, now, want["base"])
	}
	applyAll("apply-prepared", "")

	// Delete while QEMU merges d1, in the running VM's chain, into d2.
	h.mark(vm, "d1")
	want["d1"] = h.guestSig(vm)
	h.createCheckpoint(vm, "d1", "--type", "standard")
	h.mark(vm, "d2")
	want["d2"] = h.guestSig(vm)
	h.createCheckpoint(vm, "d2", "--type", "standard")
	h.markNow(vm, "n4")
	now = h.guestSig(vm)
	d1 := want["d1"]
	delete(want, "d1")
	h.crashAt("checkpoint:delete-streaming", "checkpoint", "delete", vm, "d1")
	if recovered("delete-streaming", "d1") {
		want["d1"] = d1
	}
	sameNow("delete-streaming", now)
	applyAll("delete-streaming", "d2")

	// Delete of the current checkpoint, committed: only its files were left.
	h.markNow(vm, "n5")
	now = h.guestSig(vm)
	delete(want, "d2")
	h.crashAt("checkpoint:delete-committed", "checkpoint", "delete", vm, "d2")
	if recovered("delete-committed", "d2") {
		t.Fatal("after a crash at delete-committed, the deleted checkpoint d2 is listed again")
	}
	sameNow("delete-committed", now)
	applyAll("delete-committed", "")
	h.must("vm", "kill", vm)
}

// An export, taken while the VM runs, imports as a VM of its own with the
// same checkpoints and current state; errors name the problem.
func TestExportImport(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	const vm = "ex"
	orig := h.bootTiny(vm)
	h.mark(vm, "c1")
	c1 := h.guestSig(vm)
	h.createCheckpoint(vm, "c1", "--type", "standard")
	h.mark(vm, "c2")
	c2 := h.guestSig(vm)
	h.createCheckpoint(vm, "c2", "--type", "production")
	h.mark(vm, "now")
	now := h.guestSig(vm)

	// On the same file system as hvd's root, so that --register can move it.
	base, err := os.MkdirTemp("/tmp", "hvexp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	exp := filepath.Join(base, "full")
	h.must("vm", "export", vm, exp)
	if v := h.vm(vm); v.State != api.StateRunning {
		t.Fatalf("after a live export the VM is %s", v.State)
	}
	h.waitUsable(vm)
	if _, err := os.Stat(filepath.Join(exp, "config.json")); err != nil {
		t.Fatalf("export: %v (files: %v)", err, dirNames(exp))
	}

	h.must("vm", "import", exp, "--name", "copy", "--new-id")
	cv := h.vm("copy")
	if cv.ID == orig.ID || cv.Directory == orig.Directory || cv.State == api.StateRunning {
		t.Fatalf("imported VM: id %s dir %s state %s; original id %s dir %s", cv.ID, cv.Directory, cv.State, orig.ID, orig.Directory)
	}
	if _, err := os.Stat(filepath.Join(exp, "config.json")); err != nil {
		t.Fatalf("a copy import took the export away: %v", err)
	}
	cs := h.checkpoints("copy")
	if strings.Join(checkpointNames(cs), ",") != "c1,c2" {
		t.Fatalf("imported checkpoints: %v, want c1,c2", checkpointNames(cs))
	}
	if c, _ := findCheckpoint(cs, "c2"); c.Parent != "c1" || !c.Current || c.Type != api.CheckpointProduction {
		t.Fatalf("imported c2: %+v", c)
	}
	if c, _ := findCheckpoint(cs, "c1"); c.Type != api.CheckpointStandard || !c.HasMemory {
		t.Fatalf("imported c1: %+v", c)
	}
	mustCleanDir(t, cv.Directory, "imported VM")
	h.must("vm", "start", "copy")
	h.waitHeartbeat("copy")
	if got := h.guestSig("copy"); got != now {
		t.Fatalf("imported VM's files:\n%s\nwant the current state\n%s", got, now)
	}
	h.applyCheck("copy", "c1", c1)
	h.applyCheck("copy", "c2", c2)
	// The original is untouched.
	if got := h.guestSig(vm); got != now {
		t.Fatalf("original VM's files after the import:\n%s\nwant\n%s", got, now)
	}
	if names := checkpointNames(h.checkpoints(vm)); strings.Join(names, ",") != "c1,c2" {
		t.Fatalf("original's checkpoints after export and import: %v", names)
	}

	// The current state alone, registered in place.
	flat := filepath.Join(base, "flat")
	h.must("vm", "export", vm, flat, "--no-checkpoints")
	h.must("vm", "import", flat, "--name", "flat", "--new-id", "--register")
	if _, err := os.Stat(filepath.Join(flat, "config.json")); !os.IsNotExist(err) {
		t.Fatalf("--register left the export in place: %v", err)
	}
	if cs := h.checkpoints("flat"); len(cs) != 0 {
		t.Fatalf("--no-checkpoints export imported with checkpoints %v", checkpointNames(cs))
	}
	fv := h.vm("flat")
	if !strings.HasPrefix(fv.Directory, h.root+"/") {
		t.Fatalf("a registered import lives in %s, outside hv's store %s", fv.Directory, h.root)
	}
	mustCleanDir(t, fv.Directory, "VM imported from a --no-checkpoints export")
	h.must("vm", "start", "flat")
	h.waitHeartbeat("flat")
	if got := h.guestSig("flat"); got != now {
		t.Fatalf("VM imported without checkpoints:\n%s\nwant\n%s", got, now)
	}

	// Errors.
	expect(t, h.fails("vm", "export", vm, exp), "exist", "export into an existing directory")
	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	expect(t, h.fails("vm", "import", empty, "--name", "e"), "config.json", "import of a directory without config.json")
	msg := h.fails("vm", "import", exp, "--name", "copy", "--new-id")
	expect(t, msg, "copy", "import under a name in use")
	expect(t, msg, "exist", "import under a name in use")
	var vms []api.VM
	if err := json.Unmarshal([]byte(h.must("vm", "list", "-o", "json")), &vms); err != nil || len(vms) != 3 {
		t.Fatalf("VMs after the failed imports: %d %v", len(vms), err)
	}
	for _, n := range []string{vm, "copy", "flat"} {
		h.must("vm", "kill", n)
	}
}
