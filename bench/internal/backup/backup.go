// Package backup is the backup benchmark: full and incremental backups by hv (CLI
// and API), libvirt and plain QEMU tools, against the disk's own read bandwidth
// (see bench/README.md).
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/libvirt"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/nbd"
)

// Backup benchmark (issue 5): full and incremental backups of a 4 GiB data disk of a
// running VM, by hv (its CLI into a repository, and its API read over NBD with no
// repository), by libvirt (virsh backup-begin, push mode, with checkpoints for the
// incrementals) and by plain QEMU tools (qemu-img bench and convert reading the
// whole disk), against the disk's own read bandwidth measured in the same run.
//
// The data disk is prepared on the host before the VMs start: 4 GiB of random bytes
// (a ChaCha8 stream: no zero blocks, no two blocks alike, so neither holes nor the
// repository's deduplication shorten a full backup), converted to qcow2. The guest is
// the tiny test guest as a generation 1 VM (SeaBIOS, 256 MiB, 1 vCPU) booting from a
// copy of tiny-bios.qcow2 (/dev/vda, its ext4 root mounted, so that hv's default
// application-consistent backups freeze a real file system), with the data disk as
// its second disk (/dev/vdb). Every backup takes both disks, as hv and libvirt back up
// a VM. Changes are written by the guest: 1 MiB of /dev/urandom at each of 41 (1%),
// 205 (5%) or 410 (10%) distinct 1 MiB-aligned offsets of the data disk, chosen at
// random (the same offsets on every side), then sync.
//
// Before every timed run the host's dirty pages are written back and its page cache
// dropped (/proc/sys/vm/drop_caches; where that is refused, posix_fadvise DONTNEED on
// the disk images), so every run reads the disk, not memory: QEMU opens images
// with the page cache (cache=writeback) and the host has RAM enough to cache 4 GiB.
const (
	bkDiskBytes  = 4 << 30
	bkChunk      = 1 << 20 // unit of a change in the guest, and of the direct reads
	bkRuns       = 3       // full backups per side; plain QEMU runs per tool
	bkRounds     = 3       // incremental rounds, each 1%, then 5%, then 10% changed
	bkMemMiB     = 256
	bkCPUs       = 1
	bkVM         = "bk"
	bkDomain     = "hvbench-backup"
	bkDiskName   = "data" // hv's name of the data disk
	bkBootImage  = "tiny-bios.qcow2"
	bkOpLimit    = 10 * time.Minute
	bkWriteLimit = 5 * time.Minute
	// The API path reads as hv backup create does by default: bkReaders NBD
	// connections (when the export allows several), one repository block a request.
	bkReaders  = 4
	bkReadSize = backuprepo.DefaultBlockSize
)

// bkPercents are the shares of the data disk changed before an incremental, in
// increasing order.
var bkPercents = []int{1, 5, 10}

// bkChunks is how many 1 MiB chunks pct% of the disk is.
func bkChunks(pct int) int { return int((int64(bkDiskBytes/bkChunk)*int64(pct) + 50) / 100) }

// bkRun is one timed backup or read.
type bkRun struct {
	d     time.Duration
	bytes int64         // disk data read
	open  time.Duration // hv API: from the request until the view was open
	sync  time.Duration // libvirt, convert: from the start until the copy was also fdatasynced
}

type bkSide struct {
	err  error
	na   string // why the side was not measured at all (not an error)
	full []bkRun
	incr map[int][]bkRun // by percent changed
	// notes: consistency fallbacks, disks read whole when an incremental was
	// asked for, and the like.
	notes []string
}

func (s *bkSide) measured() bool { return len(s.full) > 0 || len(s.incr) > 0 }

func (s *bkSide) note(format string, a ...any) {
	n := fmt.Sprintf(format, a...)
	if !slices.Contains(s.notes, n) {
		s.notes = append(s.notes, n)
	}
}

// bkRead is one read of a whole disk image from the host's file system.
type bkRead struct {
	what  string
	d     time.Duration
	bytes int64
}

type bkResult struct {
	fs       string
	drop     string // how the page cache was dropped
	libvirt  string
	load     [2]string
	loads    []float64 // the load average before each timed run
	dataPrep time.Duration
	disk     []bkRead // direct and cold buffered reads, before and after the VMs
	bench    []bkRun  // qemu-img bench
	convert  []bkRun  // qemu-img convert
	plainErr error
	hvCLI    bkSide
	hvAPI    bkSide
	lv       bkSide
	// changed is what the hv API reported changed per round (ChangedBytes), by
	// percent; written is the guest's write time per round, hv and libvirt.
	changed map[int][]int64
	writeHV map[int][]time.Duration
	writeLV map[int][]time.Duration
	frozen  []time.Duration // hv API: how long the guest's file systems were frozen
}

// Run measures full and incremental backups, hv against libvirt and plain
// QEMU, with the disk's read bandwidth measured before and after. The plain tools
// run before the VMs start; hv's VM and libvirt's domain then run side by side and
// take turns.
func Run(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	work, err := os.MkdirTemp("/tmp", "hvbbk")
	if err != nil {
		return "", err
	}
	cl.Add(func() { os.RemoveAll(work) })
	r := &bkResult{fs: results.FSOf(work), load: [2]string{results.LoadAvg()}, changed: map[int][]int64{},
		writeHV: map[int][]time.Duration{}, writeLV: map[int][]time.Duration{}}
	r.hvCLI.incr, r.hvAPI.incr, r.lv.incr = map[int][]bkRun{}, map[int][]bkRun{}, map[int][]bkRun{}

	// The data: random bytes in a raw file (hv imports it), and the same as a qcow2
	// for libvirt, which the plain tools and the bandwidth measurement read first.
	raw := filepath.Join(work, "data.raw")
	lvDir := filepath.Join(work, "libvirt")
	if err := os.MkdirAll(lvDir, 0o755); err != nil {
		return "", err
	}
	lvDisk := filepath.Join(lvDir, "data.qcow2")
	t0 := time.Now()
	if err := bkMakeData(raw, bkDiskBytes); err != nil {
		return "", fmt.Errorf("making the data disk: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, lvDisk).CombinedOutput(); err != nil {
		return "", fmt.Errorf("qemu-img convert of the data disk: %v: %s", err, out)
	}
	r.dataPrep = time.Since(t0)
	harness.Logf("data disk: %s of random data, raw and qcow2, made in %s", stats.MiB(bkDiskBytes), stats.Ms(r.dataPrep))

	if err := bkDiskReads(r, lvDisk, "before"); err != nil {
		return "", err
	}
	bkPlain(ctx, r, lvDisk, filepath.Join(work, "convert.qcow2"))
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	// Both VMs run side by side, idle while the other is measured, and the runs
	// alternate (hv API, hv CLI, libvirt), so that a change in the host's load
	// hits every side alike.
	harness.Logf("-- starting the VMs (load average %s)", results.LoadAvg())
	vms := &harness.Cleanup{}
	e.Cleanup.Add(vms.Run)
	hv, err := bkStartHV(ctx, e, vms, r, raw, work)
	if err != nil {
		hv.fail("setup", err)
	}
	os.Remove(raw) // imported; 4 GiB less on the disk
	lv, err := bkStartLibvirt(ctx, e, vms, r, lvDir, lvDisk)
	if err != nil {
		lv.fail("setup", err)
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	harness.Logf("-- full backups (load average %s)", results.LoadAvg())
	for i := 1; i <= bkRuns && ctx.Err() == nil; i++ {
		if hv.alive() {
			hv.full(ctx, i)
		}
		if lv.alive() {
			lv.full(ctx, i)
		}
	}
	if hv.alive() {
		hv.startIncrementals(ctx)
	}
	harness.Logf("-- incremental backups (load average %s)", results.LoadAvg())
	for round := 1; round <= bkRounds && ctx.Err() == nil; round++ {
		for _, pct := range bkPercents {
			if hv.alive() {
				hv.write(ctx, round, pct)
			}
			if lv.alive() {
				lv.write(ctx, round, pct)
			}
			if hv.alive() {
				hv.incremental(ctx, round, pct)
			}
			if lv.alive() {
				lv.incremental(ctx, round, pct)
			}
		}
	}
	vms.Run() // the VMs, hvd and libvirtd go before the last disk reads
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	if err := bkDiskReads(r, lvDisk, "after"); err != nil {
		return "", err
	}
	r.load[1] = results.LoadAvg()
	if !r.hvCLI.measured() && !r.hvAPI.measured() && !r.lv.measured() {
		return "", fmt.Errorf("nothing measured: hv CLI: %v; hv API: %v; libvirt: %v", r.hvCLI.err, r.hvAPI.err, r.lv.err)
	}
	return bkSection(e, r), nil
}

// bkMakeData writes size bytes of a ChaCha8 stream into path and syncs it.
func bkMakeData(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{'h', 'v', 'b', 'k'})
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// bkDrop writes the host's dirty pages back and drops its page cache, or, where
// /proc/sys/vm/drop_caches is refused, the cached pages of files. It returns how.
func bkDrop(files ...string) string {
	harness.Settle()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err == nil {
		return "drop_caches"
	}
	for _, p := range files {
		if f, err := os.Open(p); err == nil {
			_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
	}
	return "fadvise"
}

func (r *bkResult) dropped(how string) {
	if l, err := strconv.ParseFloat(results.LoadAvg(), 64); err == nil {
		r.loads = append(r.loads, l)
	}
	switch {
	case r.drop == "":
		r.drop = how
	case r.drop != how:
		r.drop = "mixed"
	}
}

// bkDiskReads reads the whole image path twice, 1 MiB per read, after dropping the
// page cache: with O_DIRECT, and buffered (as QEMU reads it).
func bkDiskReads(r *bkResult, path, when string) error {
	for _, direct := range []bool{true, false} {
		r.dropped(bkDrop(path))
		flags, what := 0, when+", buffered (cold cache)"
		if direct {
			flags, what = unix.O_DIRECT, when+", O_DIRECT"
		}
		n, d, err := bkReadFile(path, flags)
		if err != nil && direct {
			harness.Logf("O_DIRECT read of %s: %v; not measured", path, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("disk read bandwidth: %w", err)
		}
		r.disk = append(r.disk, bkRead{what: what, d: d, bytes: n})
		harness.Logf("disk read %s: %s in %s, %s", what, stats.MiB(uint64(n)), stats.Ms(d), stats.MiBs(stats.Throughput(n, d)))
	}
	return nil
}

func bkReadFile(path string, flags int) (int64, time.Duration, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|flags, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	buf, err := unix.Mmap(-1, 0, bkChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE) // aligned for O_DIRECT
	if err != nil {
		return 0, 0, err
	}
	defer unix.Munmap(buf)
	var n int64
	t0 := time.Now()
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF || k == 0 && err == nil {
			break
		}
		if err != nil {
			return n, 0, err
		}
	}
	return n, time.Since(t0), nil
}

// bkPlain: QEMU's own tools reading the whole disk, with no VM: qemu-img bench
// (1 MiB reads in order through QEMU's block layer, 64 in flight, its default;
// nothing written) and qemu-img
// convert into a new qcow2 file (reading and writing, as a push backup does), the
// latter also until the copy is fdatasynced.
func bkPlain(ctx context.Context, r *bkResult, disk, dst string) {
	fail := func(step string, err error) {
		r.plainErr = fmt.Errorf("%s: %w", step, err)
		harness.Logf("plain: %v", r.plainErr)
	}
	for i := 1; i <= bkRuns; i++ {
		r.dropped(bkDrop(disk))
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, "qemu-img", "bench", "-f", "qcow2", "-c", strconv.Itoa(bkDiskBytes/bkChunk),
			"-s", strconv.Itoa(bkChunk), disk).CombinedOutput()
		if err != nil {
			fail("qemu-img bench", fmt.Errorf("%v: %s", err, out))
			return
		}
		d := time.Since(t0)
		r.bench = append(r.bench, bkRun{d: d, bytes: bkDiskBytes})
		harness.Logf("plain qemu-img bench %d/%d: %s, %s", i, bkRuns, stats.Ms(d), stats.MiBs(stats.Throughput(bkDiskBytes, d)))
	}
	for i := 1; i <= bkRuns; i++ {
		os.Remove(dst)
		r.dropped(bkDrop(disk))
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", disk, dst).CombinedOutput()
		if err != nil {
			fail("qemu-img convert", fmt.Errorf("%v: %s", err, out))
			return
		}
		d := time.Since(t0)
		if err := fdatasync(dst); err != nil {
			fail("qemu-img convert", err)
			return
		}
		ds := time.Since(t0)
		r.convert = append(r.convert, bkRun{d: d, sync: ds, bytes: bkDiskBytes})
		harness.Logf("plain qemu-img convert %d/%d: %s (fdatasynced after %s), %s", i, bkRuns, stats.Ms(d), stats.Ms(ds), stats.MiBs(stats.Throughput(bkDiskBytes, d)))
	}
	os.Remove(dst)
}

func fdatasync(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fdatasync(int(f.Fd()))
}

// bkChangeScript writes 1 MiB of /dev/urandom at pct% of the disk's 1 MiB chunks,
// distinct and chosen at random (seeded by round and pct, so every side changes the
// same chunks), in ascending order, then syncs.
func bkChangeScript(round, pct int) string {
	rng := rand.New(rand.NewPCG(uint64(round), uint64(pct)))
	idx := rng.Perm(bkDiskBytes / bkChunk)[:bkChunks(pct)]
	slices.Sort(idx)
	var b strings.Builder
	b.WriteString("set -e; for i in")
	for _, i := range idx {
		fmt.Fprintf(&b, " %d", i)
	}
	fmt.Fprintf(&b, "; do dd if=/dev/urandom of=/dev/vdb bs=%d seek=$i count=1 conv=notrunc 2>/dev/null; done; sync", bkChunk)
	return b.String()
}

// bkCheckScript checks, in the guest, that the data disk is /dev/vdb and whole, and
// that the root file system is the boot disk's.
var bkCheckScript = fmt.Sprintf("test \"$(blockdev --getsize64 /dev/vdb)\" -eq %d && grep -q '^/dev/vda2 / ext4' /proc/mounts", int64(bkDiskBytes))

// hv side: one hvd and its VM; the API path and the CLI take turns.

type bkHVSide struct {
	r      *bkResult
	h      *hvside.HVD
	hvBin  string
	work   string
	images []string // the VM's disk images, whose cached pages are dropped
	useCLI bool
	repo   string // the CLI's repository: the last full's, where the incrementals go
	ref    string // the newest reference point, the incrementals' "since"
}

// alive: the hv side still has something to measure.
func (s *bkHVSide) alive() bool {
	return s.r.hvAPI.err == nil || (s.useCLI && s.r.hvCLI.err == nil)
}

// fail stops both hv paths.
func (s *bkHVSide) fail(step string, err error) {
	err = fmt.Errorf("%s: %w", step, err)
	if s.r.hvCLI.err == nil && s.r.hvCLI.na == "" {
		s.r.hvCLI.err = err
	}
	if s.r.hvAPI.err == nil {
		s.r.hvAPI.err = err
	}
	harness.Logf("hv: %v", err)
}

// bkStartHV starts hvd, creates the VM from the boot image and the data disk from
// raw (hvd converts it into the VM's directory), boots it and checks its disks.
func bkStartHV(ctx context.Context, e *harness.Env, cl *harness.Cleanup, r *bkResult, raw, work string) (*bkHVSide, error) {
	s := &bkHVSide{r: r, hvBin: filepath.Join(e.Bin, "hv"), work: work}
	if help, err := exec.CommandContext(ctx, s.hvBin, "backup", "create", "--help").CombinedOutput(); err != nil || !strings.Contains(string(help), "--full") {
		r.hvCLI.na = fmt.Sprintf("`%s backup create --help` does not offer --full (this hv has no built-in backup yet)", s.hvBin)
		harness.Logf("hv CLI: not measured: %s", r.hvCLI.na)
	}
	s.useCLI = r.hvCLI.na == ""
	var err error
	if s.h, err = hvside.StartHVD(ctx, e, cl, ""); err != nil {
		return s, fmt.Errorf("hvd: %w", err)
	}
	if err := s.h.Create(ctx, api.VMCreate{Name: bkVM, Generation: 1, CPUs: bkCPUs, Memory: fmt.Sprintf("%dM", bkMemMiB),
		Image: filepath.Join(e.Guest, bkBootImage)}); err != nil {
		return s, err
	}
	t0 := time.Now()
	op, err := s.h.Client.AddDisk(ctx, bkVM, api.DiskAdd{Name: bkDiskName, Path: raw})
	if err == nil {
		_, err = s.h.Client.WaitOperation(ctx, op.ID, nil)
	}
	if err != nil {
		return s, fmt.Errorf("add the data disk: %w", err)
	}
	vm, err := s.h.Client.GetVM(ctx, bkVM)
	if err != nil {
		return s, err
	}
	data := ""
	for _, d := range vm.Disks {
		if d.Name == bkDiskName {
			data = d.Path
		}
		s.images = append(s.images, d.Path)
	}
	if data == "" || len(vm.Disks) != 2 {
		return s, fmt.Errorf("the VM's disks are %+v; want the boot disk and %s", vm.Disks, bkDiskName)
	}
	harness.Logf("hv: data disk imported into %s in %s", data, stats.Ms(time.Since(t0)))

	poll := e.Poll
	for deadline := time.Now().Add(10 * time.Second); poll == 0 && !s.h.EventsLive(); {
		if time.Now().After(deadline) {
			poll = 100 * time.Millisecond
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	bt, _, err := s.h.StartAndWaitHeartbeat(ctx, bkVM, poll, guest.AgentLimit)
	if err != nil {
		return s, fmt.Errorf("boot: %w", err)
	}
	harness.Logf("hv VM %s: heartbeat OK after %s", bkVM, stats.Ms(bt.Heartbeat))
	if _, err := hvside.ExecLimit(ctx, s.h.Client, bkVM, time.Minute, "/bin/sh", "-c", bkCheckScript); err != nil {
		return s, fmt.Errorf("disks in the guest: %w", err)
	}
	return s, nil
}

// cli runs `hv backup create` into repo and decodes its report; t0 just before exec,
// t1 when it exited.
func (s *bkHVSide) cli(ctx context.Context, repo string, full bool) (bkRun, bkCLIReport, error) {
	var rep bkCLIReport
	args := []string{"--socket", s.h.Client.Socket(), "-q", "-o", "json", "backup", "create", bkVM, "--repo", repo}
	if full {
		args = append(args, "--full")
	}
	cmd := exec.CommandContext(ctx, s.hvBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return bkRun{}, rep, fmt.Errorf("hv %s: %w: %s", strings.Join(args[5:], " "), err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		return bkRun{}, rep, fmt.Errorf("hv %s -o json: %w: %.300q", strings.Join(args[5:], " "), err, stdout.String())
	}
	kind := "incremental"
	if full {
		kind = "full"
	}
	c := &s.r.hvCLI
	if rep.Kind != kind {
		c.note("a backup asked to be %s was stored as %s", kind, rep.Kind)
	}
	if !rep.Finished {
		c.note("hvd did not make backup %s a reference point", rep.ID)
	}
	if rep.Consistency != api.ConsistencyApplication {
		c.note("consistency %s: %s", rep.Consistency, rep.ConsistencyReason)
	}
	for _, d := range rep.Disks {
		if !full && d.Full {
			c.note("an incremental read disk %s whole: %s", d.Name, d.FullReason)
		}
	}
	return bkRun{d: d, bytes: rep.ChangedBytes}, rep, nil
}

// api is one backup through the API (bkAPIBackup), since s.ref when incremental.
// Without the CLI (or once it failed) the backup is finished and becomes the
// reference point; otherwise it is aborted, so that the CLI's stays the newest and
// the CLI run after it reads the same changes.
func (s *bkHVSide) api(ctx context.Context, incremental bool) (bkRun, api.Backup, error) {
	since := ""
	if incremental {
		since = s.ref
	}
	finish := !s.useCLI || s.r.hvCLI.err != nil
	run, b, err := bkAPIBackup(ctx, s.h.Client, bkVM, since, finish)
	if err != nil {
		return run, b, err
	}
	if finish {
		s.ref = b.ID
	}
	a := &s.r.hvAPI
	if b.FrozenSeconds > 0 {
		s.r.frozen = append(s.r.frozen, time.Duration(b.FrozenSeconds*float64(time.Second)))
	}
	if b.Consistency != api.ConsistencyApplication {
		a.note("consistency %s: %s", b.Consistency, b.ConsistencyReason)
	}
	for _, d := range b.Disks {
		if incremental && !d.Incremental {
			a.note("an incremental read disk %s whole: %s", d.Name, d.FullReason)
		}
	}
	return run, b, nil
}

// full is run i of the full backups: the API path, then the CLI into a fresh
// repository (the previous one is removed; the last stays for the incrementals).
func (s *bkHVSide) full(ctx context.Context, i int) {
	if a := &s.r.hvAPI; a.err == nil {
		s.r.dropped(bkDrop(s.images...))
		run, _, err := s.api(ctx, false)
		if err != nil {
			a.err = fmt.Errorf("full backup: %w", err)
			harness.Logf("hv API: %v", a.err)
		} else {
			a.full = append(a.full, run)
			harness.Logf("hv API full %d/%d: %s (open after %s), %s read, %s", i, bkRuns, stats.Ms(run.d), stats.Ms(run.open), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
		}
	}
	c := &s.r.hvCLI
	if !s.useCLI || c.err != nil {
		return
	}
	if s.repo != "" {
		os.RemoveAll(s.repo)
	}
	s.repo = filepath.Join(s.work, fmt.Sprintf("repo%d", i))
	s.r.dropped(bkDrop(s.images...))
	run, rep, err := s.cli(ctx, s.repo, true)
	if err != nil {
		c.err = fmt.Errorf("full backup: %w", err)
		harness.Logf("hv CLI: %v", c.err)
		return
	}
	s.ref = rep.Reference
	c.full = append(c.full, run)
	harness.Logf("hv CLI full %d/%d: %s, %s read, %s", i, bkRuns, stats.Ms(run.d), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// startIncrementals makes sure there is a reference point to start from: without a
// CLI full, one more API full, finished, not counted.
func (s *bkHVSide) startIncrementals(ctx context.Context) {
	if s.ref == "" && s.r.hvAPI.err == nil {
		if _, b, err := bkAPIBackup(ctx, s.h.Client, bkVM, "", true); err == nil {
			s.ref = b.ID
		}
	}
	if s.ref == "" {
		s.fail("incremental backups", errors.New("no reference point to start from: no full backup finished"))
	}
}

// write changes pct% of the data disk in the guest (not timed in the backups).
func (s *bkHVSide) write(ctx context.Context, round, pct int) {
	t0 := time.Now()
	if _, err := hvside.ExecLimit(ctx, s.h.Client, bkVM, bkWriteLimit, "/bin/sh", "-c", bkChangeScript(round, pct)); err != nil {
		s.fail(fmt.Sprintf("writing %d%% of the data disk in the guest", pct), err)
		return
	}
	s.r.writeHV[pct] = append(s.r.writeHV[pct], time.Since(t0))
}

// incremental backs up the changes written last: the API path, then the CLI.
func (s *bkHVSide) incremental(ctx context.Context, round, pct int) {
	if a := &s.r.hvAPI; a.err == nil {
		s.r.dropped(bkDrop(s.images...))
		run, b, err := s.api(ctx, true)
		if err != nil {
			a.err = fmt.Errorf("incremental backup (%d%%): %w", pct, err)
			harness.Logf("hv API: %v", a.err)
		} else {
			var changed int64
			for _, d := range b.Disks {
				changed += d.ChangedBytes
			}
			s.r.changed[pct] = append(s.r.changed[pct], changed)
			a.incr[pct] = append(a.incr[pct], run)
			harness.Logf("hv API incremental round %d, %d%%: %s (open after %s), changed %s, %s read, %s",
				round, pct, stats.Ms(run.d), stats.Ms(run.open), stats.MiB(uint64(changed)), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
		}
	}
	c := &s.r.hvCLI
	if !s.useCLI || c.err != nil {
		return
	}
	s.r.dropped(bkDrop(s.images...))
	run, rep, err := s.cli(ctx, s.repo, false)
	if err != nil {
		c.err = fmt.Errorf("incremental backup (%d%%): %w", pct, err)
		harness.Logf("hv CLI: %v", c.err)
		return
	}
	s.ref = rep.Reference
	c.incr[pct] = append(c.incr[pct], run)
	harness.Logf("hv CLI incremental round %d, %d%%: %s, %s read, %s", round, pct, stats.Ms(run.d), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// bkCLIReport is the part of `hv backup create -o json` the benchmark reads.
type bkCLIReport struct {
	ID                string `json:"id"`
	Kind              string `json:"kind"`
	Consistency       string `json:"consistency"`
	ConsistencyReason string `json:"consistency_reason"`
	Reference         string `json:"reference"`
	Finished          bool   `json:"finished"`
	// ChangedBytes: the blocks read from the VM's disks (all the data of a disk
	// read whole).
	ChangedBytes int64 `json:"changed_bytes"`
	StoredBytes  int64 `json:"stored_bytes"`
	Disks        []struct {
		Name       string `json:"name"`
		Full       bool   `json:"full"`
		FullReason string `json:"full_reason"`
	} `json:"disks"`
}

// bkAPIBackup opens a backup through hvd's API (full when since is ""), reads
// what it says to read over NBD (the disk's data extents, or the changed ones) and
// discards it, then finishes the backup (finish) or aborts it. t0 is just before the
// request, t1 when the finish or abort answered.
func bkAPIBackup(ctx context.Context, c *client.Client, vm, since string, finish bool) (bkRun, api.Backup, error) {
	var run bkRun
	var b api.Backup
	req := api.BackupCreate{}
	if since != "" {
		req.Since = &since
	}
	t0 := time.Now()
	op, err := c.CreateBackup(ctx, vm, req)
	if err != nil {
		return run, b, err
	}
	if op, err = c.WaitOperation(ctx, op.ID, nil); err != nil {
		return run, b, err
	}
	if err := client.DecodeResult(op, &b); err != nil {
		return run, b, err
	}
	run.open = time.Since(t0)
	ended := false
	defer func() {
		if !ended {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = c.AbortBackup(actx, vm, b.ID)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, bkOpLimit)
	defer cancel()
	for _, d := range b.Disks {
		n, err := bkReadExport(rctx, d)
		if err != nil {
			return run, b, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		run.bytes += n
	}
	ended = true
	if finish {
		_, err = c.FinishBackup(ctx, vm, b.ID)
	} else {
		err = c.AbortBackup(ctx, vm, b.ID)
	}
	if err != nil {
		return run, b, err
	}
	run.d = time.Since(t0)
	return run, b, nil
}

// bkReadExport reads a backup disk's extents that need reading (base:allocation
// data, or the dirty bitmap's changed extents when incremental) with up to
// bkReaders connections, bkReadSize bytes a request, and returns the bytes read.
func bkReadExport(ctx context.Context, d api.BackupDisk) (int64, error) {
	mc, mask, want := nbd.BaseAllocation, uint32(nbd.StateZero), uint32(0)
	if d.Incremental {
		mc, mask, want = d.DirtyBitmap, nbd.StateDirty, nbd.StateDirty
	}
	opts := nbd.Options{Export: d.Export, MetaContexts: []string{mc}}
	c0, err := nbd.Dial(ctx, "unix", d.Socket, opts)
	if err != nil {
		return 0, err
	}
	defer c0.Close()
	exts, err := c0.Extents(ctx, mc)
	if err != nil {
		return 0, err
	}
	type piece struct{ off, n int64 }
	var pieces []piece
	for _, x := range nbd.Select(exts, mask, want) {
		for off := x.Offset; off < x.End(); off += bkReadSize {
			pieces = append(pieces, piece{off, min(bkReadSize, x.End()-off)})
		}
	}
	workers := 1
	if c0.Export().Flags.CanMultiConn() {
		workers = bkReaders
	}
	clients := []*nbd.Client{c0}
	for len(clients) < workers {
		c, err := nbd.Dial(ctx, "unix", d.Socket, nbd.Options{Export: d.Export})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	jobs := make(chan piece)
	var mu sync.Mutex
	var total int64
	var firstErr error
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bkReadSize)
			for p := range jobs {
				err := c.ReadInto(ctx, buf[:p.n], p.off)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					total += p.n
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range pieces {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			break
		}
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	return total, firstErr
}

// libvirt side: a private libvirtd (package libvirt), the same guest as a transient
// domain, virsh backup-begin in push mode into a new qcow2 file per backup.

// bkDomainXML is the hv VM's machine for libvirt: generation 1 (pc, SeaBIOS) booting
// from boot (virtio vda), the data disk as virtio vdb, the agent channel, no USB, no
// balloon.
func bkDomainXML(e *harness.Env, boot, data, serial string) string {
	typ, cpu := "qemu", "<cpu mode='maximum'/>"
	if e.Host.Accel == "kvm" {
		typ, cpu = "kvm", "<cpu mode='host-passthrough'/>"
	}
	esc := html.EscapeString
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>%d</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  %s
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial'/>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`, typ, bkDomain, bkMemMiB, bkCPUs, cpu, esc(boot), esc(data), esc(serial))
}

// bkBackupXML is a push-mode backup of vda and vdb into new qcow2 files named
// prefix-vda.qcow2 and prefix-vdb.qcow2, incremental since checkpoint since when not "".
func bkBackupXML(prefix, since string) string {
	inc := ""
	if since != "" {
		inc = "<incremental>" + html.EscapeString(since) + "</incremental>\n  "
	}
	var disks strings.Builder
	for _, d := range []string{"vda", "vdb"} {
		fmt.Fprintf(&disks, `    <disk name='%s' backup='yes' type='file'>
      <driver type='qcow2'/>
      <target file='%s'/>
    </disk>
`, d, html.EscapeString(prefix+"-"+d+".qcow2"))
	}
	return fmt.Sprintf("<domainbackup mode='push'>\n  %s<disks>\n%s  </disks>\n</domainbackup>\n", inc, disks.String())
}

func bkCheckpointXML(name string) string {
	return fmt.Sprintf(`<domaincheckpoint>
  <name>%s</name>
  <disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='bitmap'/></disks>
</domaincheckpoint>
`, html.EscapeString(name))
}

// bkLVSide is libvirt's domain and how to back it up.
type bkLVSide struct {
	r          *bkResult
	e          *harness.Env
	l          *libvirt.Daemon
	jobs       *libvirt.Jobs
	dir        string
	boot, data string
	prev       string // the newest checkpoint, the incrementals' <incremental>
	n          int    // incrementals so far
}

func (s *bkLVSide) alive() bool { return s.r.lv.err == nil }

func (s *bkLVSide) fail(step string, err error) {
	s.r.lv.err = fmt.Errorf("%s: %w", step, err)
	harness.Logf("libvirt: %v", s.r.lv.err)
}

// bkStartLibvirt starts the private libvirtd and the domain (a copy of the boot
// image and data, the qcow2 data disk), checks its disks, follows its job events
// and makes the checkpoint the first incremental starts from (not timed).
func bkStartLibvirt(ctx context.Context, e *harness.Env, cl *harness.Cleanup, r *bkResult, dir, data string) (*bkLVSide, error) {
	s := &bkLVSide{r: r, e: e, dir: dir, data: data, boot: filepath.Join(dir, "boot.qcow2")}
	var err error
	if s.l, err = libvirt.Start(ctx, cl, dir); err != nil {
		return s, fmt.Errorf("libvirtd: %w", err)
	}
	r.libvirt = s.l.Version
	if err := harness.CopyFile(filepath.Join(e.Guest, bkBootImage), s.boot); err != nil {
		return s, fmt.Errorf("boot disk copy: %w", err)
	}
	serial := filepath.Join(dir, "serial.log")
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(bkDomainXML(e, s.boot, data, serial)), 0o644); err != nil {
		return s, err
	}
	t0 := time.Now()
	if _, err := s.l.Virsh(ctx, time.Minute, "create", xmlPath); err != nil {
		return s, err
	}
	if _, err := s.l.WaitAgent(ctx, bkDomain, guest.AgentLimit); err != nil {
		return s, fmt.Errorf("boot: %w; %s", err, harness.Tail(serial))
	}
	harness.Logf("libvirt domain %s: agent answered after %s", bkDomain, stats.Ms(time.Since(t0)))
	if err := s.l.AgentRun(ctx, bkDomain, time.Minute, "/bin/sh", "-c", bkCheckScript); err != nil {
		return s, fmt.Errorf("disks in the guest: %w", err)
	}
	if s.jobs, err = s.l.WatchJobs(ctx, cl, bkDomain); err != nil {
		return s, fmt.Errorf("virsh event: %w", err)
	}
	harness.Sleep(ctx, time.Second) // let virsh event register before the first job
	if _, err := s.l.Virsh(ctx, time.Minute, "checkpoint-create-as", bkDomain, "--name", "cp0",
		"--diskspec", "vda,checkpoint=bitmap", "--diskspec", "vdb,checkpoint=bitmap"); err != nil {
		return s, err
	}
	s.prev = "cp0"
	return s, nil
}

// backup is one backup-begin (with a new checkpoint cp when not ""), timed until
// libvirt's job-completed event, then until the targets are also fdatasynced. The
// bytes are libvirt's own count (the job's disk_processed), or 0.
func (s *bkLVSide) backup(ctx context.Context, name, since, cp string) (bkRun, error) {
	prefix := filepath.Join(s.dir, name)
	targets := []string{prefix + "-vda.qcow2", prefix + "-vdb.qcow2"}
	bx := filepath.Join(s.dir, name+"-backup.xml")
	if err := os.WriteFile(bx, []byte(bkBackupXML(prefix, since)), 0o644); err != nil {
		return bkRun{}, err
	}
	args := []string{"backup-begin", bkDomain, bx}
	if cp != "" {
		cx := filepath.Join(s.dir, name+"-checkpoint.xml")
		if err := os.WriteFile(cx, []byte(bkCheckpointXML(cp)), 0o644); err != nil {
			return bkRun{}, err
		}
		args = append(args, cx)
	}
	for drained := false; !drained; {
		select {
		case <-s.jobs.Done:
		default:
			drained = true
		}
	}
	s.r.dropped(bkDrop(s.boot, s.data))
	t0 := time.Now()
	if _, err := s.l.Virsh(ctx, time.Minute, args...); err != nil {
		return bkRun{}, err
	}
	var ev string
	select {
	case ev = <-s.jobs.Done:
		if ev == "" {
			return bkRun{}, errors.New("virsh event ended before the job completed")
		}
	case <-time.After(bkOpLimit):
		return bkRun{}, fmt.Errorf("no job-completed event within %s", bkOpLimit)
	case <-ctx.Done():
		return bkRun{}, ctx.Err()
	}
	d := time.Since(t0)
	for _, t := range targets {
		if err := fdatasync(t); err != nil {
			return bkRun{}, fmt.Errorf("the backup's target: %w (event: %s)", err, ev)
		}
	}
	ds := time.Since(t0)
	info, _ := s.l.Virsh(ctx, time.Minute, "domjobinfo", bkDomain, "--completed", "--keep-completed")
	if !strings.Contains(info, "Completed") {
		return bkRun{}, fmt.Errorf("the backup job did not complete: %s; event: %s", strings.Join(strings.Fields(info), " "), ev)
	}
	raw, _ := s.l.Virsh(ctx, time.Minute, "domjobinfo", bkDomain, "--completed", "--rawstats")
	if s.e.Verbose {
		harness.Logf("libvirt domjobinfo --completed --rawstats: %s", strings.Join(strings.Fields(raw), " "))
	}
	for _, t := range targets {
		os.Remove(t)
	}
	return bkRun{d: d, sync: ds, bytes: bkJobBytes(raw)}, nil
}

// full is run i of the full backups: push mode, no checkpoint.
func (s *bkLVSide) full(ctx context.Context, i int) {
	run, err := s.backup(ctx, fmt.Sprintf("full%d", i), "", "")
	if err != nil {
		s.fail("full backup (backup-begin)", err)
		return
	}
	// libvirt's disk_processed of a full backup counts every byte of both disks,
	// the boot disk's unallocated space too; the disk data is what hv read of the
	// same disks (their allocated data), so that counts.
	switch {
	case len(s.r.hvAPI.full) > 0:
		if run.bytes != 0 {
			s.r.lv.note("a full backup's job reports %s processed (both disks whole, unallocated space included); "+
				"its data read is counted as hv's (the disks' allocated data)", stats.MiB(uint64(run.bytes)))
		}
		run.bytes = bkBytes(s.r.hvAPI.full)
	case run.bytes == 0:
		run.bytes = bkDiskBytes
		s.r.lv.note("libvirt did not report the bytes its job read (disk_processed); data read counted as the data disk's size")
	}
	s.r.lv.full = append(s.r.lv.full, run)
	harness.Logf("libvirt full %d/%d: %s (targets fdatasynced after %s), %s", i, bkRuns, stats.Ms(run.d), stats.Ms(run.sync), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// write changes pct% of the data disk in the guest (not timed in the backups).
func (s *bkLVSide) write(ctx context.Context, round, pct int) {
	t0 := time.Now()
	if err := s.l.AgentRun(ctx, bkDomain, bkWriteLimit, "/bin/sh", "-c", bkChangeScript(round, pct)); err != nil {
		s.fail(fmt.Sprintf("writing %d%% of the data disk in the guest", pct), err)
		return
	}
	s.r.writeLV[pct] = append(s.r.writeLV[pct], time.Since(t0))
}

// incremental: backup-begin with <incremental> the newest checkpoint and a new
// checkpoint; the older one is deleted afterwards (not timed), as hv keeps only its
// newest reference point.
func (s *bkLVSide) incremental(ctx context.Context, round, pct int) {
	s.n++
	cp := fmt.Sprintf("cp%d", s.n)
	run, err := s.backup(ctx, fmt.Sprintf("inc%d", s.n), s.prev, cp)
	if err != nil {
		s.fail(fmt.Sprintf("incremental backup (%d%%, backup-begin with <incremental>%s</incremental>)", pct, s.prev), err)
		return
	}
	if run.bytes == 0 {
		run.bytes = int64(bkChunks(pct)) * bkChunk
		s.r.lv.note("libvirt did not report the bytes its job read (disk_processed); data read counted as the chunks the guest changed")
	}
	s.r.lv.incr[pct] = append(s.r.lv.incr[pct], run)
	harness.Logf("libvirt incremental round %d, %d%%: %s (targets fdatasynced after %s), %s read, %s",
		round, pct, stats.Ms(run.d), stats.Ms(run.sync), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
	if _, err := s.l.Virsh(ctx, time.Minute, "checkpoint-delete", bkDomain, s.prev); err != nil {
		s.r.lv.note("checkpoint-delete %s: %s", s.prev, results.LastLine(err.Error()))
	}
	s.prev = cp
}

// bkArgs are the benchmark's arguments without -out (where the results go changes
// nothing measured).
func bkArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(args[i], "-")
		switch {
		case a == "out" || a == "-out":
			i++
		case strings.HasPrefix(a, "out=") || strings.HasPrefix(a, "-out="):
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// bkCommit is the source tree's commit (git rev-parse), "" outside a git tree.
func bkCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// bkJobBytes is disk_processed (bytes) from `virsh domjobinfo --rawstats`, or 0.
func bkJobBytes(raw string) int64 {
	for _, line := range strings.Split(raw, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "disk_processed" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return 0
}

// Results.

func bkDur(runs []bkRun) []time.Duration {
	var d []time.Duration
	for _, r := range runs {
		d = append(d, r.d)
	}
	return d
}

func bkField(runs []bkRun, f func(bkRun) time.Duration) []time.Duration {
	var d []time.Duration
	for _, r := range runs {
		if v := f(r); v > 0 {
			d = append(d, v)
		}
	}
	return d
}

// bkTP is the median of the runs' throughputs, MiB/s.
func bkTP(runs []bkRun) float64 {
	var b []int64
	var d []time.Duration
	for _, r := range runs {
		b, d = append(b, r.bytes), append(d, r.d)
	}
	return stats.MedianThroughput(b, d)
}

func bkBytes(runs []bkRun) int64 {
	var b []int64
	for _, r := range runs {
		b = append(b, r.bytes)
	}
	return stats.MedianSize(b)
}

// diskRef is the disk read bandwidth the throughputs are compared with: the median
// of every whole-disk read (O_DIRECT and buffered, before and after), MiB/s.
func (r *bkResult) diskRef() float64 {
	var all []time.Duration
	for _, x := range r.disk {
		all = append(all, time.Duration(stats.Throughput(x.bytes, x.d)*1e6))
	}
	return float64(stats.Median(all)) / 1e6
}

func bkSection(e *harness.Env, r *bkResult) string {
	var b strings.Builder
	b.WriteString("## Backups: `hv backup create` vs libvirt `virsh backup-begin` vs plain QEMU\n\n")
	drop := map[string]string{"drop_caches": "`sync` and `echo 3 > /proc/sys/vm/drop_caches`",
		"fadvise": "`sync` and posix_fadvise(DONTNEED) of the disk images (drop_caches was refused)",
		"mixed":   "`sync` and drop_caches, or posix_fadvise(DONTNEED) where drop_caches was refused"}[r.drop]
	loads := "?"
	if len(r.loads) > 0 {
		var v []time.Duration
		for _, l := range r.loads {
			v = append(v, time.Duration(l*1000))
		}
		loads = fmt.Sprintf("%.2f (%.2f–%.2f)", float64(stats.Median(v))/1000, float64(stats.Min(v))/1000, float64(stats.Max(v))/1000)
	}
	fmt.Fprintf(&b, "Measured %s on %s; load average %s at the start, %s at the end, %s before the timed runs (2 cores; the benchmark's "+
		"own VMs count in it). "+
		"Guest: the tiny test guest, generation 1 (`-machine pc`, SeaBIOS), %d MiB, %d vCPU, booting from a copy of `%s` "+
		"(`/dev/vda`, 256 MiB virtual, its ext4 root mounted) with a second disk: a **%d MiB qcow2 data disk** (virtio-blk, `/dev/vdb`) made on "+
		"the host before the VMs start from %d MiB of random bytes (a ChaCha8 stream: no zero blocks, no two blocks alike, so neither holes nor "+
		"deduplication shorten a full backup; made in %s, not timed). Every backup takes both disks. hv's VM and libvirt's domain run side by "+
		"side, each idle while the other is measured, and the runs alternate (hv API, hv CLI, libvirt), so that a change in the host's load "+
		"hits every side alike: %d full backups per side, then %d rounds of incrementals, each after 1%%, 5%% and 10%% of the data disk "+
		"changed (by both guests, before the round's backups). Before every timed "+
		"run the host's page cache is written back and dropped (%s), so that every run reads the disk: QEMU reads images through the page "+
		"cache, and this host's RAM would hold 4 GiB.\n\n",
		e.Host.Date, e.Host.Short(), r.load[0], r.load[1], loads, bkMemMiB, bkCPUs, bkBootImage,
		bkDiskBytes>>20, bkDiskBytes>>20, stats.Ms(r.dataPrep), bkRuns, bkRounds, drop)
	if r.libvirt != "" {
		fmt.Fprintf(&b, "libvirt: %s (a private libvirtd started by the benchmark, as in the checkpoint benchmark).\n\n", r.libvirt)
	}
	fmt.Fprintf(&b, "Command: `go run ./bench %s`", strings.Join(bkArgs(os.Args[1:]), " "))
	if c := bkCommit(); c != "" {
		fmt.Fprintf(&b, ", in the source tree at commit %s", c)
	}
	b.WriteString(".\n\n")

	ref := r.diskRef()
	b.WriteString("### The disk, and plain QEMU reading the whole disk\n\n")
	fmt.Fprintf(&b, "Where the images live: %s. Whole-image reads of the qcow2 data disk (%s, 1 MiB reads, one at a time, page cache dropped first):\n\n", r.fs, stats.MiB(uint64(bkDiskBytes)))
	b.WriteString("| read | time | throughput |\n|---|---:|---:|\n")
	for _, x := range r.disk {
		fmt.Fprintf(&b, "| disk: %s | %s | %s |\n", x.what, stats.Secs(x.d), stats.MiBs(stats.Throughput(x.bytes, x.d)))
	}
	fmt.Fprintf(&b, "\n**Disk read bandwidth** (reference below): the median of these, **%.0f MiB/s**.\n\n", ref)

	pct := func(tp float64) string {
		if tp <= 0 || ref <= 0 {
			return "—"
		}
		return fmt.Sprintf("**%.0f%%**", 100*tp/ref)
	}
	tpCell := func(runs []bkRun) string {
		if len(runs) == 0 {
			return "—"
		}
		return stats.MiBs(bkTP(runs))
	}
	ratio2 := func(a, c []bkRun) string { return stats.RatioCell(bkDur(a), bkDur(c)) }

	b.WriteString("### Full backup (the whole disk)\n\n")
	b.WriteString("| | time | data read | throughput | / disk read bandwidth | hv CLI / this | hv API / this |\n|---|---:|---:|---:|---:|---:|---:|\n")
	rows := []struct {
		name string
		runs []bkRun
	}{
		{"**hv CLI** `hv backup create VM --repo NEW --full` (into a fresh repository)", r.hvCLI.full},
		{"**hv API** + NBD read (`internal/nbd`, data discarded, no repository)", r.hvAPI.full},
		{"**libvirt** `virsh backup-begin` push, until job-completed", r.lv.full},
		{"**plain** `qemu-img convert -O qcow2` (read + write a copy)", r.convert},
		{"**plain** `qemu-img bench`, 1 MiB reads, queue depth 64 (read only)", r.bench},
	}
	for i, x := range rows {
		rc, ra := ratio2(r.hvCLI.full, x.runs), ratio2(r.hvAPI.full, x.runs)
		switch i {
		case 0:
			rc = ""
		case 1:
			ra = ""
		}
		data := "—"
		if len(x.runs) > 0 {
			data = stats.MiB(uint64(bkBytes(x.runs)))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.name, stats.Cell(bkDur(x.runs), stats.Secs), data, tpCell(x.runs), pct(bkTP(x.runs)), rc, ra)
	}
	b.WriteString("\n")
	if o := bkField(r.hvAPI.full, func(x bkRun) time.Duration { return x.open }); len(o) > 0 {
		fmt.Fprintf(&b, "hv API: the point-in-time view was open (POST …/backups until its operation succeeded) after %s; the rest is reading. ", stats.Cell(o, stats.Secs))
		if len(r.frozen) > 0 {
			fmt.Fprintf(&b, "hv freezes the guest's file systems for its point in time (application consistency, the default of both hv paths; "+
				"libvirt's push backups do not freeze): frozen %s over all hv API backups. ", stats.Cell(r.frozen, stats.Ms))
		}
	}
	if s := bkField(r.lv.full, func(x bkRun) time.Duration { return x.sync }); len(s) > 0 {
		fmt.Fprintf(&b, "libvirt: until the target files were also fdatasynced %s. ", stats.Cell(s, stats.Secs))
	}
	if s := bkField(r.convert, func(x bkRun) time.Duration { return x.sync }); len(s) > 0 {
		fmt.Fprintf(&b, "qemu-img convert: until its copy was also fdatasynced %s.", stats.Cell(s, stats.Secs))
	}
	b.WriteString("\n\n")

	b.WriteString("### Incremental backups\n\n")
	b.WriteString("| changed | hv CLI | hv API + NBD | libvirt | hv CLI / libvirt | hv API / libvirt | hv CLI: time / full | libvirt: time / full |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	frac := func(inc, full []bkRun) string {
		if len(inc) == 0 || len(full) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.3f", stats.Ratio(stats.Median(bkDur(inc)), stats.Median(bkDur(full))))
	}
	for _, p := range bkPercents {
		ch := fmt.Sprintf("%d%% (%d × 1 MiB", p, bkChunks(p))
		if c := r.changed[p]; len(c) > 0 {
			ch += fmt.Sprintf("; hvd: %s changed", stats.MiB(uint64(stats.MedianSize(c))))
		}
		ch += ")"
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", ch,
			stats.Cell(bkDur(r.hvCLI.incr[p]), stats.Secs), stats.Cell(bkDur(r.hvAPI.incr[p]), stats.Secs), stats.Cell(bkDur(r.lv.incr[p]), stats.Secs),
			ratio2(r.hvCLI.incr[p], r.lv.incr[p]), ratio2(r.hvAPI.incr[p], r.lv.incr[p]),
			frac(r.hvCLI.incr[p], r.hvCLI.full), frac(r.lv.incr[p], r.lv.full))
	}
	b.WriteString("\n")
	// Proportional to the changed data: time = fixed + bytes / rate. The rate
	// between neighbouring shares (the difference of their medians) is the same
	// for every pair when it is; the fixed cost is the line through the smallest
	// and largest share, extrapolated to nothing changed.
	lo, hi := bkPercents[0], bkPercents[len(bkPercents)-1]
	fmt.Fprintf(&b, "Proportional to the changed data? time = fixed cost + changed bytes / rate, from the medians: the rate between "+
		"neighbouring shares changed (equal for every pair if the time grows in proportion to the data), the fixed cost extrapolated "+
		"from %d%% and %d%% to nothing changed:\n\n", lo, hi)
	b.WriteString("| | time at " + strconv.Itoa(hi) + "% / time at " + strconv.Itoa(lo) + "% |")
	for i := 1; i < len(bkPercents); i++ {
		fmt.Fprintf(&b, " rate %d%% → %d%% |", bkPercents[i-1], bkPercents[i])
	}
	fmt.Fprintf(&b, " rate %d%% → %d%% / disk read bandwidth | fixed cost |\n|---|---:|", lo, hi)
	b.WriteString(strings.Repeat("---:|", len(bkPercents)-1) + "---:|---:|\n")
	rateOf := func(a, c []bkRun) float64 {
		ta, tc := stats.Median(bkDur(a)), stats.Median(bkDur(c))
		ba, bc := bkBytes(a), bkBytes(c)
		if tc <= ta || bc <= ba {
			return 0
		}
		return float64(bc-ba) / (1 << 20) / (tc - ta).Seconds()
	}
	for _, x := range []struct {
		name string
		s    *bkSide
	}{{"hv CLI", &r.hvCLI}, {"hv API + NBD", &r.hvAPI}, {"libvirt", &r.lv}} {
		complete := true
		for _, p := range bkPercents {
			complete = complete && len(x.s.incr[p]) > 0
		}
		if !complete {
			fmt.Fprintf(&b, "| %s |%s — | — |\n", x.name, strings.Repeat(" — |", len(bkPercents)))
			continue
		}
		first, last := x.s.incr[lo], x.s.incr[hi]
		fmt.Fprintf(&b, "| %s | %.1f |", x.name, stats.Ratio(stats.Median(bkDur(last)), stats.Median(bkDur(first))))
		for i := 1; i < len(bkPercents); i++ {
			fmt.Fprintf(&b, " %s |", stats.MiBs(rateOf(x.s.incr[bkPercents[i-1]], x.s.incr[bkPercents[i]])))
		}
		fixed := "—"
		if rate := rateOf(first, last); rate > 0 {
			f := stats.Median(bkDur(first)) - time.Duration(float64(bkBytes(first))/(1<<20)/rate*float64(time.Second))
			fixed = stats.Secs(max(f, 0))
		}
		fmt.Fprintf(&b, " %s | %s |\n", pct(rateOf(first, last)), fixed)
	}
	b.WriteString("\n")
	var wh, wl []string
	for _, p := range bkPercents {
		wh = append(wh, fmt.Sprintf("%d%% %s", p, stats.Cell(r.writeHV[p], stats.Secs)))
		wl = append(wl, fmt.Sprintf("%d%% %s", p, stats.Cell(r.writeLV[p], stats.Secs)))
	}
	fmt.Fprintf(&b, "The guest wrote the changes (not timed in the backups) in: hv %s; libvirt %s.\n\n", strings.Join(wh, ", "), strings.Join(wl, ", "))

	for _, x := range []struct {
		name string
		s    *bkSide
	}{{"hv CLI", &r.hvCLI}, {"hv API", &r.hvAPI}, {"libvirt", &r.lv}} {
		switch {
		case x.s.na != "":
			fmt.Fprintf(&b, "- **%s: not measured**: %s\n", x.name, results.OneLine(x.s.na))
		case x.s.err != nil && !x.s.measured():
			fmt.Fprintf(&b, "- **%s: not measured**: %s\n", x.name, results.OneLine(x.s.err.Error()))
		case x.s.err != nil:
			fmt.Fprintf(&b, "- **%s: stopped early**: %s\n", x.name, results.OneLine(x.s.err.Error()))
		}
		for _, n := range x.s.notes {
			fmt.Fprintf(&b, "- %s: %s\n", x.name, results.OneLine(n))
		}
	}
	if r.plainErr != nil {
		fmt.Fprintf(&b, "- **plain: stopped early**: %s\n", results.OneLine(r.plainErr.Error()))
	}

	b.WriteString("\nTargets (from the issue): incremental time proportional to the changed data; backup throughput at 50% or more of the " +
		"disk's read bandwidth. The benchmark does not judge them.\n\n")
	fmt.Fprintf(&b, "How each side is timed: **hv CLI** `hv --socket … -q -o json backup create %s --repo DIR [--full]` from exec to exit; data read = "+
		"its report's `changed_bytes` (the blocks it read: %d KiB repository blocks, its default, over up to %d NBD connections). The full runs each use a fresh repository; the incrementals go into "+
		"the last one. **hv API** the Go client and `internal/nbd`: t0 before `POST /1.0/vms/%s/backups` (`since`: null, or the newest "+
		"reference point), the operation waited for, then every disk's extents to read (base:allocation data, or the dirty bitmap's changed "+
		"extents) read with up to %d NBD connections, %d KiB a request, and discarded; t1 when `DELETE` (abort) answered: the CLI's "+
		"reference point stays the newest, so the CLI run after it reads the same changes. "+
		"**libvirt** `virsh backup-begin DOM backup.xml [checkpoint.xml]` (push mode into a new qcow2 target; incrementals with "+
		"`<incremental>` the previous checkpoint and a new checkpoint, the older one deleted afterwards, not timed), from exec until "+
		"`virsh event --event job-completed` (started once, before the runs) printed the event; the job checked with `domjobinfo --completed` "+
		"and the targets removed afterwards; data read = the job's `disk_processed` (`domjobinfo --completed --rawstats`). **plain** `qemu-img bench -f qcow2 -c %d -s %d` and "+
		"`qemu-img convert -f qcow2 -O qcow2` of the data disk with no VM running. Throughput = data read / time, per run, median.\n",
		bkVM, bkReadSize>>10, bkReaders, bkVM, bkReaders, bkReadSize>>10, bkDiskBytes/bkChunk, bkChunk)
	return results.Wrap("backup", b.String())
}
