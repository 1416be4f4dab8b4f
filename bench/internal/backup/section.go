package backup

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// The backup section of RESULTS.md.

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
