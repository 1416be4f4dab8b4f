package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/backuprepo"
)

// Backups with change tracking (issue 5), as a user and a third-party tool
// see them: what a restored VM's guest reads, how much an incremental
// stores, and that tracking survives what a VM and hvd go through, or says
// why it did not.

const (
	mib = int64(1) << 20
	// repoBlock is the repository's block size (backuprepo.DefaultBlockSize):
	// an incremental stores every block a change touches.
	repoBlock = int64(backuprepo.DefaultBlockSize)
	// slot is the unit of the guests' scattered writes.
	slot = 256 << 10
)

// backupReport is what 'hv backup create -o json' prints.
type backupReport struct {
	ID                string  `json:"id"`
	VM                string  `json:"vm"`
	Kind              string  `json:"kind"`
	Parent            string  `json:"parent"`
	Consistency       string  `json:"consistency"`
	ConsistencyReason string  `json:"consistency_reason"`
	Reference         string  `json:"reference"`
	Finished          bool    `json:"finished"`
	ChangedBytes      int64   `json:"changed_bytes"`
	StoredBytes       int64   `json:"stored_bytes"`
	DurationSeconds   float64 `json:"duration_seconds"`
	Disks             []struct {
		Name         string `json:"name"`
		Size         int64  `json:"size"`
		Full         bool   `json:"full"`
		FullReason   string `json:"full_reason"`
		ChangedBytes int64  `json:"changed_bytes"`
	} `json:"disks"`
}

// disk returns the report's disk called name, failing the test when it is missing.
func (r backupReport) disk(t *testing.T, name string) (full bool, reason string, changed int64) {
	t.Helper()
	for _, d := range r.Disks {
		if d.Name == name {
			return d.Full, d.FullReason, d.ChangedBytes
		}
	}
	t.Fatalf("backup %s has no disk %s: %+v", r.ID, name, r.Disks)
	return
}

// repoBackup is one backup as 'hv backup list --repo DIR -o json' prints it.
type repoBackup struct {
	ID     string `json:"id"`
	VM     string `json:"vm"`
	Kind   string `json:"kind"`
	Parent string `json:"parent"`
	Stats  struct {
		NewBytes int64 `json:"new_bytes"`
	} `json:"stats"`
}

// backup runs 'hv backup create VM --repo REPO ARGS... -o json', which must
// succeed and finish the backup in hvd; it returns the report and stderr.
func (h *host) backup(vm, repo string, args ...string) (backupReport, string) {
	h.t.Helper()
	argv := append([]string{"backup", "create", vm, "--repo", repo, "-o", "json"}, args...)
	start := time.Now()
	r := h.hv(argv...)
	if r.code != 0 {
		h.t.Fatalf("hv %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.code, r.stdout, r.stderr)
	}
	var rep backupReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		h.t.Fatalf("hv %s: %v\n%s", strings.Join(argv, " "), err, r.stdout)
	}
	if !rep.Finished || rep.ID == "" || rep.Reference == "" || rep.VM != vm {
		h.t.Fatalf("hv %s: not a finished backup of %s: %+v\nstderr: %s", strings.Join(argv, " "), vm, rep, r.stderr)
	}
	h.t.Logf("backup %s of %s: %s, changed %d, stored %d bytes, in %s", rep.ID, vm, rep.Kind, rep.ChangedBytes, rep.StoredBytes,
		time.Since(start).Round(time.Millisecond))
	return rep, r.stderr
}

// repoBackups lists the backups of the repository, oldest first.
func (h *host) repoBackups(repo string) []repoBackup {
	h.t.Helper()
	out := h.must("backup", "list", "--repo", repo, "-o", "json")
	var bs []repoBackup
	if err := json.Unmarshal([]byte(out), &bs); err != nil {
		h.t.Fatalf("hv backup list --repo -o json: %v\n%s", err, out)
	}
	return bs
}

// verifyRepo runs hv backup verify, which must find no problem, and returns
// how many bytes it re-read.
func (h *host) verifyRepo(repo string, id ...string) int64 {
	h.t.Helper()
	argv := append([]string{"backup", "verify", "--repo", repo, "-o", "json"}, id...)
	r := h.hv(argv...)
	var rep struct {
		Backups  int   `json:"backups"`
		Bytes    int64 `json:"bytes"`
		Problems []struct {
			Backup, Message string
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil || len(rep.Problems) != 0 {
		h.t.Fatalf("hv %s: exit %d (%v)\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.code, err, r.stdout, r.stderr)
	}
	return rep.Bytes
}

// restore makes VM as from backup id; it is Off.
func (h *host) restore(repo, id, as string) api.VM {
	h.t.Helper()
	out := h.must("backup", "restore", "--repo", repo, id, "--as", as, "-o", "json")
	var v api.VM
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		h.t.Fatalf("hv backup restore -o json: %v\n%s", err, out)
	}
	if v.Name != as || v.State != api.StateOff {
		h.t.Fatalf("restored VM: %+v", v)
	}
	return v
}

// addDataDisk hot-adds an empty disk to a running VM (or one copied from the
// image file at path) and waits until the guest sees it as /dev/vdb.
func (h *host) addDataDisk(vm, size, path string) {
	h.t.Helper()
	args := []string{"vm", "disk", "add", vm, "--name", "data1"}
	if path != "" {
		args = append(args, path)
	} else {
		args = append(args, "--size", size)
	}
	h.must(args...)
	h.waitVDB(vm)
}

// waitVDB waits until the guest has its data disk /dev/vdb.
func (h *host) waitVDB(vm string) {
	h.t.Helper()
	h.execRetry(vm, "i=0; while [ ! -b /dev/vdb ]; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.2; done")
}

// guestSlow runs a long shell command in the guest (hashing a disk under TCG).
func (h *host) guestSlow(vm, script string) string {
	h.t.Helper()
	return h.must("vm", "exec", vm, "--timeout", "10m", "--", "/bin/sh", "-c", script)
}

// guestDiskSum is the SHA-256 of the guest's whole /dev/vdb, read from the
// virtual disk (the page cache dropped), and how long it took.
func (h *host) guestDiskSum(vm string) string {
	h.t.Helper()
	start := time.Now()
	out := h.guestSlow(vm, "sync; echo 3 > /proc/sys/vm/drop_caches; sha256sum /dev/vdb")
	f := strings.Fields(out)
	if len(f) < 1 || len(f[0]) != 64 {
		h.t.Fatalf("sha256sum /dev/vdb in %s: %q", vm, out)
	}
	h.t.Logf("sha256 of /dev/vdb in %s: %s (%s)", vm, f[0], time.Since(start).Round(time.Millisecond))
	return f[0]
}

// scatter writes random data into n distinct 256 KiB slots of the guest's
// /dev/vdb (of size bytes), no two next to each other, each synced, and
// returns the slots' offsets.
func (h *host) scatter(vm string, rng *rand.Rand, n int, size int64, avoid []int64) []int64 {
	h.t.Helper()
	used := map[int64]bool{}
	for _, o := range avoid {
		used[o/slot] = true
	}
	var offs []int64
	var script strings.Builder
	for len(offs) < n {
		s := rng.Int64N(size / slot)
		if used[s] || used[s-1] || used[s+1] {
			continue
		}
		used[s] = true
		offs = append(offs, s*slot)
		fmt.Fprintf(&script, "dd if=/dev/urandom of=/dev/vdb bs=256k count=1 seek=%d conv=fsync 2>/dev/null || exit 1; ", s)
	}
	script.WriteString("sync")
	h.exec(vm, script.String())
	return offs
}

// blocksOf counts the repository blocks the writes at offs (each one slot) touch.
func blocksOf(offs ...[]int64) int64 {
	blocks := map[int64]bool{}
	for _, l := range offs {
		for _, o := range l {
			blocks[o/repoBlock] = true
			blocks[(o+slot-1)/repoBlock] = true
		}
	}
	return int64(len(blocks))
}

// activeImage is the image file a VM that is off writes for disk: the active
// one of its checkpoint tree, else the one of its configuration.
func activeImage(t *testing.T, dir, disk string) string {
	t.Helper()
	if data, err := os.ReadFile(filepath.Join(dir, "checkpoints.json")); err == nil {
		var f struct {
			Tree struct {
				Active map[string]string `json:"active"`
			} `json:"tree"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("%s/checkpoints.json: %v", dir, err)
		}
		if file := f.Tree.Active[disk]; file != "" {
			return filepath.Join(dir, file)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
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
		t.Fatalf("%s/config.json: %v", dir, err)
	}
	for _, d := range cfg.VM.Disks {
		if d.Name == disk {
			return filepath.Join(dir, d.File)
		}
	}
	t.Fatalf("VM directory %s has no disk %s", dir, disk)
	return ""
}

// sameDisks checks with qemu-img compare that each disk of the VM restored
// into dir reads exactly as the same disk of the VM in orig (both off).
func sameDisks(t *testing.T, orig, restored string, disks ...string) {
	t.Helper()
	for _, d := range disks {
		a, b := activeImage(t, orig, d), activeImage(t, restored, d)
		out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", a, b).CombinedOutput()
		if err != nil {
			t.Fatalf("disk %s: the restored image %s does not read as the VM's %s: %v\n%s", d, b, a, err, out)
		}
	}
}

// sha256Of hashes a file without holding it in memory.
func sha256Of(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(hs.Sum(nil))
}

func newRNG(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random offsets from seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>7))
}

// A full backup of 256 MiB written to a 2 GiB data disk, then an
// incremental after 8 MiB of scattered writes: the incremental reads only
// the blocks written, verifies, and restores as a new VM that boots, whose
// guest reads on its data disk what the original's guest had written, and
// whose data disk is, whole, the original's.
func TestBackupIncrementalRestore(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("took %s", time.Since(start).Round(time.Second)) }()
	h := newHost(t)
	rng := newRNG(t)
	const vm = "src"
	const size = 2 << 30
	dir := h.bootTiny(vm).Directory
	h.addDataDisk(vm, "2G", "")
	repo := filepath.Join(t.TempDir(), "repo")

	t0 := time.Now()
	h.guestSlow(vm, "dd if=/dev/urandom of=/dev/vdb bs=1M count=256 conv=fsync 2>/dev/null && sync")
	t.Logf("the guest wrote 256 MiB in %s", time.Since(t0).Round(time.Millisecond))

	full, _ := h.backup(vm, repo)
	if f, _, changed := full.disk(t, "data1"); full.Kind != "full" || !f || changed < 256*mib || changed > 257*mib {
		t.Fatalf("the first backup: kind %s, data1 full=%v with %d bytes; want a full backup of the 256 MiB written: %+v", full.Kind, f, changed, full)
	}
	if full.Consistency != api.ConsistencyApplication {
		t.Errorf("backup of a running VM with an agent: consistency %s (%s), want application", full.Consistency, full.ConsistencyReason)
	}

	// 8 MiB at scattered offsets, and a file on the root file system.
	offs := h.scatter(vm, rng, 32, size, nil)
	h.mark(vm, "inc")
	// What the guest wrote, read back from its disk: hashing all 2 GiB
	// takes minutes under TCG; the host compares the disks whole below.
	var sum strings.Builder
	sum.WriteString("sync; echo 3 > /proc/sys/vm/drop_caches; { dd if=/dev/vdb bs=1M count=256 2>/dev/null; ")
	for _, o := range offs {
		fmt.Fprintf(&sum, "dd if=/dev/vdb bs=256k skip=%d count=1 2>/dev/null; ", o/slot)
	}
	sum.WriteString("} | sha256sum")
	guestSum := func(vm string) string {
		t.Helper()
		t0 := time.Now()
		f := strings.Fields(h.guestSlow(vm, sum.String()))
		if len(f) == 0 || len(f[0]) != 64 {
			t.Fatalf("sha256 of the data written to /dev/vdb in %s: %q", vm, f)
		}
		t.Logf("sha256 of the 264 MiB written to /dev/vdb, in %s: %s (%s)", vm, f[0], time.Since(t0).Round(time.Millisecond))
		return f[0]
	}
	want := guestSum(vm)

	inc, _ := h.backup(vm, repo)
	f, why, changed := inc.disk(t, "data1")
	if inc.Kind != "incremental" || inc.Parent != full.ID || f {
		t.Fatalf("the second backup: kind %s on %q, data1 full=%v (%s); want an incremental on %s", inc.Kind, inc.Parent, f, why, full.ID)
	}
	if rf, why, _ := inc.disk(t, "root"); rf {
		t.Errorf("the second backup read the root disk whole: %s", why)
	}
	// The tracking is exact: the changed blocks are those the writes touch.
	if n := blocksOf(offs); changed != n*repoBlock {
		t.Errorf("incremental: data1 changed %d bytes; the guest's 32 writes of 256 KiB touch %d repository blocks (%d bytes)", changed, n, n*repoBlock)
	}
	// The bar: an incremental after 8 MiB of changes stores less than twice that.
	if inc.StoredBytes >= 2*8*mib {
		t.Errorf("incremental after the guest wrote 8 MiB (32 x 256 KiB at random offsets): stored %d bytes (%.1f MiB; data1 %d, the rest %d), want under %d (2 x 8 MiB)",
			inc.StoredBytes, float64(inc.StoredBytes)/float64(mib), changed, inc.ChangedBytes-changed, 2*8*mib)
	}
	bs := h.repoBackups(repo)
	if len(bs) != 2 || bs[0].ID != full.ID || bs[1].ID != inc.ID || bs[1].Kind != "incremental" || bs[1].Parent != full.ID {
		t.Fatalf("hv backup list --repo: %+v", bs)
	}
	if read := h.verifyRepo(repo, inc.ID); read < 256*mib {
		t.Fatalf("hv backup verify %s re-read %d bytes; the backup and its parent hold more than 256 MiB", inc.ID, read)
	}

	// The original stops using the CPU (its data disk as it was backed up);
	// its copy boots and reads the same.
	h.must("vm", "kill", vm)
	h.waitNoQEMU("after hv vm kill")
	r := h.restore(repo, inc.ID, "copy")
	sameDisks(t, dir, r.Directory, "data1")
	h.must("vm", "start", "copy")
	h.waitHeartbeat("copy")
	h.waitVDB("copy")
	if got := guestSum("copy"); got != want {
		t.Fatalf("the restored VM's guest reads the data written to /dev/vdb as sha256 %s; the original's read %s when backed up", got, want)
	}
	if got := h.execRetry("copy", "cat /f-inc"); got != "inc" {
		t.Fatalf("the restored VM's /f-inc: %q, want %q", got, "inc")
	}
	h.must("vm", "kill", "copy")
}

// Change tracking outlives a stop and start of the VM, a crash and a restart
// of hvd, and a live checkpoint: the next backup is an incremental holding exactly what
// the guest wrote, and so is one taken once the VM is off; restored, it
// reads as the VM's disks.
func TestBackupTrackingSurvives(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("took %s", time.Since(start).Round(time.Second)) }()
	h := newHost(t)
	rng := newRNG(t)
	const vm = "ts"
	const size = 512 << 20
	dir := h.bootTiny(vm).Directory
	h.addDataDisk(vm, "512M", "")
	repo := filepath.Join(t.TempDir(), "repo")
	h.exec(vm, "dd if=/dev/urandom of=/dev/vdb bs=1M count=8 conv=fsync 2>/dev/null")
	full, _ := h.backup(vm, repo)
	_, _, fullRoot := full.disk(t, "root")

	// Writes before and after each event.
	var all []int64
	all = append(all, h.scatter(vm, rng, 2, size, all)...)
	h.must("vm", "stop", vm)
	h.must("vm", "start", vm)
	h.waitHeartbeat(vm)
	h.waitVDB(vm)
	all = append(all, h.scatter(vm, rng, 2, size, all)...)
	h.killHVD()
	h.startHVD()
	h.waitHeartbeat(vm)
	all = append(all, h.scatter(vm, rng, 2, size, all)...)
	h.stopHVD()
	h.startHVD()
	h.waitHeartbeat(vm)
	all = append(all, h.scatter(vm, rng, 2, size, all)...)
	if c := h.createCheckpoint(vm, "cp1"); c.Type != api.CheckpointProduction || c.FellBack {
		t.Fatalf("live checkpoint: %+v", c)
	}
	all = append(all, h.scatter(vm, rng, 2, size, all)...)

	inc, stderr := h.backup(vm, repo)
	f, why, changed := inc.disk(t, "data1")
	if inc.Kind != "incremental" || inc.Parent != full.ID || f {
		t.Fatalf("after a stop and start, a crash and a restart of hvd, and a checkpoint: kind %s on %q, data1 full=%v (%s); want an incremental on %s\nstderr: %s",
			inc.Kind, inc.Parent, f, why, full.ID, stderr)
	}
	if n := blocksOf(all); changed != n*repoBlock {
		t.Errorf("data1 changed %d bytes; the guest's writes touch %d repository blocks (%d bytes)", changed, n, n*repoBlock)
	}
	rf, why, rootChanged := inc.disk(t, "root")
	if rf || rootChanged >= fullRoot/2 {
		t.Errorf("root disk: full=%v (%s), %d bytes changed of %d in the full backup", rf, why, rootChanged, fullRoot)
	}
	if inc.StoredBytes > inc.ChangedBytes {
		t.Errorf("the incremental stored %d bytes for %d changed", inc.StoredBytes, inc.ChangedBytes)
	}
	var tr struct {
		Disks []api.TrackedDisk `json:"disks"`
		Open  []api.Backup      `json:"open"`
	}
	if out := h.must("backup", "list", vm, "-o", "json"); json.Unmarshal([]byte(out), &tr) != nil || len(tr.Disks) != 2 || len(tr.Open) != 0 {
		t.Fatalf("hv backup list %s: %s", vm, out)
	}
	for _, d := range tr.Disks {
		if !d.Tracked {
			t.Errorf("hv backup list %s: disk %s is not tracked: %s", vm, d.Name, d.Reason)
		}
	}

	// Off: the backup reads the images themselves.
	last := h.scatter(vm, rng, 3, size, all)
	h.must("vm", "stop", vm)
	off, _ := h.backup(vm, repo)
	f, why, changed = off.disk(t, "data1")
	if off.Kind != "incremental" || off.Parent != inc.ID || f || changed != blocksOf(last)*repoBlock {
		t.Fatalf("backup of the VM once off: kind %s on %q, data1 full=%v (%s) with %d bytes changed, want an incremental on %s with %d: %+v",
			off.Kind, off.Parent, f, why, changed, inc.ID, blocksOf(last)*repoBlock, off)
	}
	bs := h.repoBackups(repo)
	var kinds []string
	for _, b := range bs {
		kinds = append(kinds, b.Kind)
	}
	if strings.Join(kinds, ",") != "full,incremental,incremental" {
		t.Fatalf("hv backup list --repo: kinds %v, want full,incremental,incremental", kinds)
	}
	h.verifyRepo(repo)
	r := h.restore(repo, off.ID, "ts-restored")
	sameDisks(t, dir, r.Directory, "root", "data1")
}

// A disk image written while the VM is off, behind hv's back, is backed up
// whole next time, and the backup says why; the other disk stays an
// incremental, and the disk's tracking starts again from that backup.
func TestBackupBehindBack(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("took %s", time.Since(start).Round(time.Second)) }()
	h := newHost(t)
	const vm = "bb"
	dir := h.bootTiny(vm).Directory
	h.addDataDisk(vm, "256M", "")
	repo := filepath.Join(t.TempDir(), "repo")
	h.exec(vm, "dd if=/dev/urandom of=/dev/vdb bs=1M count=4 conv=fsync 2>/dev/null")
	full, _ := h.backup(vm, repo)
	h.must("vm", "stop", vm)
	h.waitNoQEMU("after hv vm stop")

	img := activeImage(t, dir, "data1")
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io write to %s: %v\n%s", img, err, out)
	}
	const reason = "its image file changed while no QEMU of hv had it open"
	rep, stderr := h.backup(vm, repo)
	f, why, _ := rep.disk(t, "data1")
	if !f || !strings.Contains(why, reason) {
		t.Fatalf("after a write behind hv's back: data1 full=%v, reason %q; want full because %q\nstderr: %s", f, why, reason, stderr)
	}
	expect(t, stderr, "disk data1: full: "+reason, "hv backup create's stderr")
	if rf, why, _ := rep.disk(t, "root"); rf || rep.Kind != "incremental" || rep.Parent != full.ID {
		t.Fatalf("the root disk, untouched: full=%v (%s); backup kind %s on %q, want an incremental on %s", rf, why, rep.Kind, rep.Parent, full.ID)
	}

	// The backup holds the write.
	h.verifyRepo(repo)
	r := h.restore(repo, rep.ID, "bb-restored")
	sameDisks(t, dir, r.Directory, "root", "data1")
	data := activeImage(t, r.Directory, "data1")
	out, err := exec.Command("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0xab 1M 64k", data).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "read 65536/65536") || strings.Contains(string(out), "Pattern verification failed") {
		t.Fatalf("the restored data1 at 1M: %v\n%s", err, out)
	}

	// Tracked again from that backup.
	again, stderr := h.backup(vm, repo)
	if f, why, changed := again.disk(t, "data1"); f || changed != 0 || again.Kind != "incremental" {
		t.Fatalf("the backup after the full one: kind %s, data1 full=%v (%s) with %d bytes changed; want an incremental with none\nstderr: %s",
			again.Kind, f, why, changed, stderr)
	}
}

// hvd and the VM's QEMU killed (-9) while hv backup create reads, then QEMU
// alone: hv fails and keeps nothing, the repository verifies, hvd has no
// backup open, and the next backup reads whole, saying why, the disks whose
// tracking QEMU could not store.
func TestBackupKilled(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("took %s", time.Since(start).Round(time.Second)) }()
	h := newHost(t)
	const vm = "bk"
	h.bootTiny(vm)
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "repo")

	// Lots of data, made on the host (the guest writes slowly under TCG).
	mb := int64(512)
	if err := randomFile(filepath.Join(tmp, "data.raw"), mb*mib); err != nil {
		t.Fatal(err)
	}
	h.addDataDisk(vm, "", filepath.Join(tmp, "data.raw"))
	last, _ := h.backup(vm, repo)
	if _, _, changed := last.disk(t, "data1"); changed < mb*mib {
		t.Fatalf("the first backup read %d bytes of data1, which holds %d", changed, mb*mib)
	}

	// interrupt runs hv backup create --full (everything is read again) and
	// calls kill once it has read some of it; it returns hv's stderr.
	progress := regexp.MustCompile(`backing up ` + vm + `: (\d+)%`)
	interrupt := func(what string, kill func()) string {
		t.Helper()
		for attempt := 0; ; attempt++ {
			if attempt == 3 {
				t.Fatalf("hv backup create --full of %d MiB finished each time before %s", mb, what)
			}
			cmd := exec.Command(filepath.Join(*binDir, "hv"), "backup", "create", vm, "--repo", repo, "--full", "-o", "json")
			cmd.Env = append(os.Environ(), "HV_SOCKET="+h.socket)
			var out, errb strings.Builder
			cmd.Stdout = &out
			pipe, err := cmd.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed := false
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				line := sc.Text()
				errb.WriteString(line + "\n")
				if m := progress.FindStringSubmatch(line); !killed && m != nil {
					if pct, _ := strconv.Atoi(m[1]); pct >= 5 && pct < 80 {
						kill()
						killed = true
						t.Logf("%s at %q", what, line)
					}
				}
			}
			cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			switch {
			case killed && code == 0:
				t.Fatalf("hv backup create succeeded although %s while it read\nstdout: %s\nstderr: %s", what, out.String(), errb.String())
			case killed:
				msg := strings.TrimSpace(errb.String())
				t.Logf("hv backup create: %s", msg[strings.LastIndex(msg, "\n")+1:])
				expect(t, msg, "aborted", "hv backup create's error when "+what)
				return msg
			case code != 0:
				t.Fatalf("hv backup create --full failed before %s\nstdout: %s\nstderr: %s", what, out.String(), errb.String())
			}
			// It finished first: twice the data, on one more disk.
			t.Logf("hv backup create --full of %d MiB finished before %s; adding %d MiB", mb, what, mb*2)
			more := filepath.Join(tmp, fmt.Sprintf("more%d.raw", attempt))
			if err := randomFile(more, 2*mb*mib); err != nil {
				t.Fatal(err)
			}
			h.must("vm", "disk", "add", vm, "--name", fmt.Sprintf("more%d", attempt), more)
			mb *= 3
			last, _ = h.backup(vm, repo)
		}
	}
	// recovered checks that nothing of the interrupted backup is left, and
	// that the next one reads each disk whole and says why.
	recovered := func(what string) {
		t.Helper()
		h.waitFor(vm, time.Minute, "Off after its QEMU was killed", func(v api.VM) bool { return v.State == api.StateOff })
		before := h.repoBackups(repo)
		if n := len(before); n == 0 || before[n-1].ID != last.ID {
			t.Fatalf("after the backup interrupted as %s, the newest backup is not %s: %+v", what, last.ID, before)
		}
		h.verifyRepo(repo)
		if staged, _ := os.ReadDir(filepath.Join(repo, "staging")); len(staged) != 0 {
			t.Errorf("the repository's staging/ holds %v after hv gave up", dirNames(filepath.Join(repo, "staging")))
		}
		var tr struct {
			Open []api.Backup `json:"open"`
		}
		if out := h.must("backup", "list", vm, "-o", "json"); json.Unmarshal([]byte(out), &tr) != nil || len(tr.Open) != 0 {
			t.Fatalf("hv backup list %s after %s: %s", vm, what, out)
		}
		h.must("vm", "start", vm)
		h.waitHeartbeat(vm)
		// hvd's side, once the new QEMU has opened the disks: untracked, and why.
		var ct struct {
			Disks []api.TrackedDisk `json:"disks"`
		}
		if out := h.must("backup", "list", vm, "-o", "json"); json.Unmarshal([]byte(out), &ct) != nil || len(ct.Disks) == 0 {
			t.Fatalf("hv backup list %s after %s: %s", vm, what, out)
		}
		for _, d := range ct.Disks {
			t.Logf("after %s, hvd tracks disk %s: %v (%s)", what, d.Name, d.Tracked, d.Reason)
			if d.Tracked || !strings.Contains(d.Reason, "QEMU") {
				t.Errorf("hv backup list %s after %s: disk %s tracked=%v, reason %q; want untracked, and why (QEMU did not store its change tracking)",
					vm, what, d.Name, d.Tracked, d.Reason)
			}
		}
		next, stderr := h.backup(vm, repo)
		for _, d := range next.Disks {
			t.Logf("after %s, disk %s: full=%v: %s", what, d.Name, d.Full, d.FullReason)
			if !d.Full || !strings.Contains(d.FullReason, "QEMU") {
				t.Errorf("disk %s after %s: full=%v, reason %q; want full, and why (QEMU did not store its change tracking)\nstderr: %s",
					d.Name, what, d.Full, d.FullReason, stderr)
			}
			expect(t, stderr, "disk "+d.Name+": full: ", "hv backup create's stderr")
		}
		h.verifyRepo(repo)
		if bs := h.repoBackups(repo); len(bs) != len(before)+1 || bs[len(bs)-1].ID != next.ID {
			t.Fatalf("backups after the one past %s: %+v", what, bs)
		}
		last = next
	}

	// hvd and QEMU die: the restarted hvd finds the backup its predecessor left.
	interrupt("hvd and QEMU were killed", func() {
		h.cmd.Process.Signal(syscall.SIGKILL)
		killQEMUs(h.root)
	})
	h.waitHVD(10 * time.Second)
	h.waitNoQEMU("after kill -9")
	h.startHVD()
	recovered("a crash of hvd and QEMU")

	// QEMU alone dies: hvd sees it and ends the backup.
	interrupt("QEMU was killed", func() { killQEMUs(h.root) })
	h.waitNoQEMU("after kill -9")
	recovered("a crash of QEMU")
	h.must("vm", "kill", vm)
}

// randomFile writes size random bytes to path.
func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	now := time.Now().UnixNano()
	for i := range 8 {
		seed[i] = byte(now >> (8 * i))
	}
	_, err = io.CopyN(f, rand.NewChaCha8(seed), size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// The example third-party client, against hvd: its raw images match the
// guest's data disk at each backup's point in time, full then incremental.
func TestBackupThirdPartyClient(t *testing.T) {
	t.Parallel()
	start := time.Now()
	defer func() { t.Logf("took %s", time.Since(start).Round(time.Second)) }()
	tmp := t.TempDir()
	client := filepath.Join(tmp, "backup-client")
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go") // the toolchain running this test
	}
	wd, _ := os.Getwd()
	build := exec.Command(gobin, "build", "-o", client, "./examples/backup-client")
	build.Dir = filepath.Dir(wd)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/backup-client: %v\n%s", err, out)
	}

	h := newHost(t)
	rng := newRNG(t)
	const vm = "tp"
	const size = 256 << 20
	h.bootTiny(vm)
	h.addDataDisk(vm, "256M", "")
	h.exec(vm, "dd if=/dev/urandom of=/dev/vdb bs=1M count=16 conv=fsync 2>/dev/null")
	out := filepath.Join(tmp, "out")
	run := func(args ...string) (ref, stderr string) {
		t.Helper()
		cmd := exec.Command(client, append([]string{"-socket", h.socket, "-vm", vm, "-out", out}, args...)...)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("backup-client %v: %v\nstdout: %s\nstderr: %s", args, err, o.String(), e.String())
		}
		lines := strings.Split(strings.TrimSpace(o.String()), "\n")
		f := strings.Fields(lines[len(lines)-1])
		if len(f) != 2 || f[0] != "reference" {
			t.Fatalf("backup-client %v: the last line is not 'reference ID': %q", args, o.String())
		}
		return f[1], e.String()
	}

	want := h.guestDiskSum(vm)
	ref1, stderr := run()
	expect(t, stderr, "data1: full", "backup-client's full backup")
	if got := sha256Of(t, filepath.Join(out, "data1.img")); got != want {
		t.Fatalf("full: data1.img has sha256 %s; the guest read %s", got, want)
	}

	offs := h.scatter(vm, rng, 16, size, nil)
	want = h.guestDiskSum(vm)
	ref2, stderr := run("-since", ref1)
	expect(t, stderr, fmt.Sprintf("data1: incremental, %d changed extents", len(offs)), "backup-client's incremental")
	if got := sha256Of(t, filepath.Join(out, "data1.img")); got != want {
		t.Fatalf("incremental: data1.img has sha256 %s; the guest read %s", got, want)
	}

	var tr struct {
		ReferencePoints []api.ReferencePoint `json:"reference_points"`
	}
	if o := h.must("backup", "list", vm, "-o", "json"); json.Unmarshal([]byte(o), &tr) != nil {
		t.Fatalf("hv backup list %s: %s", vm, o)
	}
	var ids []string
	for _, r := range tr.ReferencePoints {
		ids = append(ids, r.ID)
	}
	if !slices.Contains(ids, ref1) || !slices.Contains(ids, ref2) {
		t.Fatalf("hvd's reference points %v lack the client's %s and %s", ids, ref1, ref2)
	}
	h.must("vm", "kill", vm)
}
