// Package backup is the backup benchmark: full and incremental backups by hv (CLI
// and API), libvirt and plain QEMU tools, against the disk's own read bandwidth
// (see bench/README.md).
package backup

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/internal/backuprepo"
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
