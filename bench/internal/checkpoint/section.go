package checkpoint

import (
	"fmt"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// The checkpoint section of RESULTS.md.

func ckSection(e *harness.Env, r *ckResult) string {
	var b strings.Builder
	b.WriteString("## Checkpoints: `hv checkpoint` vs libvirt `virsh snapshot-create-as` vs plain QEMU\n\n")
	fmt.Fprintf(&b, "Measured %s on %s; load average %s at the start, %s at the end (when each side started: hv %s, libvirt %s, plain %s). "+
		"Guest: the tiny test guest from `%s`, generation 2 (q35, OVMF), %d MiB, %d vCPU, with %d MiB of random data "+
		"written into its `/dev/shm` before the checkpoints (dirty RAM). One VM at a time: hv, then libvirt, then plain QEMU; "+
		"%d runs of each create series (no warm-up: each run adds a checkpoint), %d of each apply series; median (min–max). "+
		"The host's dirty pages are written back (sync) before each run, outside the timing.\n\n",
		e.Host.Date, e.Host.Short(), r.load[0], r.load[1], r.hv.load, r.lv.load, r.plain.load, ckImage, ckMemMiB, ckCPUs, ckFillMiB, ckRuns, ckApplyRuns)
	if r.libvirt != "" {
		fmt.Fprintf(&b, "libvirt: %s (a private libvirtd started by the benchmark).\n\n", r.libvirt)
	}

	var dw []string
	var all []time.Duration // MiB/s scaled, for median
	for _, d := range r.disk {
		dw = append(dw, fmt.Sprintf("%.0f MiB/s buffered + fdatasync, %s O_DIRECT", d.synced, stats.MiBs(d.direct)))
		for _, v := range []float64{d.synced, d.direct} {
			if v > 0 {
				all = append(all, time.Duration(v*1e6))
			}
		}
	}
	diskRef := float64(stats.Median(all)) / 1e6
	fmt.Fprintf(&b, "Disk write bandwidth where the VM files live (%s), 1 GiB of random data in 1 MiB writes, "+
		"before / after the VMs: %s. Reference below: the median of these, **%.0f MiB/s**.\n\n",
		r.fs, strings.Join(dw, " / "), diskRef)

	hv, lv, pl := &r.hv, &r.lv, &r.plain
	b.WriteString("### Create\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / libvirt | hv / plain |\n|---|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| production: checkpoint time (disk-only, quiesced) | %s | %s | %s | %s | %s |\n",
		stats.Cell(hv.prod, stats.Ms), stats.Cell(lv.prod, stats.Ms), stats.Cell(pl.prod, stats.Ms), stats.RatioCell(hv.prod, lv.prod), stats.RatioCell(hv.prod, pl.prod))
	fmt.Fprintf(&b, "| production: guest frozen | %s | %s | %s | | %s |\n",
		stats.Cell(hv.frozen, stats.Ms), naIf(lv.prod, "not reported"), stats.Cell(pl.frozen, stats.Ms), stats.RatioCell(hv.frozen, pl.frozen))
	fmt.Fprintf(&b, "| standard: checkpoint time (memory + disks) | %s | %s | %s | %s | %s |\n",
		stats.Cell(hv.std, stats.Secs), stats.Cell(lv.std, stats.Secs), stats.Cell(pl.std, stats.Secs), stats.RatioCell(hv.std, lv.std), stats.RatioCell(hv.std, pl.std))
	sizeCell := func(s *ckSide) string {
		if len(s.stdBytes) == 0 {
			return "—"
		}
		return stats.MiB(uint64(stats.MedianSize(s.stdBytes)))
	}
	fmt.Fprintf(&b, "| standard: bytes saved | %s | %s | %s | | |\n", sizeCell(hv), sizeCell(lv), sizeCell(pl))
	tp := func(s *ckSide) float64 { return stats.MedianThroughput(s.stdBytes, s.std) }
	tpCell := func(s *ckSide) string {
		if len(s.std) == 0 {
			return "—"
		}
		return stats.MiBs(tp(s))
	}
	tpRatio := func(a, c *ckSide) string {
		if len(a.std) == 0 || len(c.std) == 0 || tp(c) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f", tp(a)/tp(c))
	}
	fmt.Fprintf(&b, "| standard: save throughput | %s | %s | %s | %s | %s |\n",
		tpCell(hv), tpCell(lv), tpCell(pl), tpRatio(hv, lv), tpRatio(hv, pl))
	pct := func(s *ckSide) string {
		if len(s.std) == 0 || diskRef == 0 {
			return "—"
		}
		return fmt.Sprintf("**%.0f%%**", 100*tp(s)/diskRef)
	}
	fmt.Fprintf(&b, "| standard: save throughput / disk bandwidth | %s | %s | %s | | |\n\n", pct(hv), pct(lv), pct(pl))
	if len(pl.stdRunning) > 0 {
		fmt.Fprintf(&b, "Plain QEMU's standard time includes the fdatasync of its state file after `cont`; its guest ran again after %s. "+
			"hv's and libvirt's are until their command returned.\n\n", stats.Cell(pl.stdRunning, stats.Secs))
	}

	b.WriteString("### Apply\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / plain |\n|---|---:|---:|---:|---:|\n")
	lvApply := "—"
	if lv.applyNA != "" {
		lvApply = "not measured¹"
	}
	fmt.Fprintf(&b, "| standard: until Running | %s | %s | %s | %s |\n",
		stats.Cell(hv.applyStd, stats.Secs), lvApply, stats.Cell(pl.applyStd, stats.Secs), stats.RatioCell(hv.applyStd, pl.applyStd))
	fmt.Fprintf(&b, "| production: until Off | %s | %s | — | |\n", stats.Cell(hv.applyProdOff, stats.Secs), lvApply)
	fmt.Fprintf(&b, "| production: then start until heartbeat | %s | — | — | |\n\n", stats.Cell(hv.applyProdHB, stats.Secs))
	if lv.applyNA != "" {
		fmt.Fprintf(&b, "¹ libvirt: %s\n\n", lv.applyNA)
	}

	for _, x := range []struct {
		name, verb string
		s          *ckSide
	}{{"hv", "not measured", hv}, {"libvirt", "not available", lv}, {"plain", "not measured", pl}} {
		switch {
		case x.s.err != nil && !x.s.measured():
			fmt.Fprintf(&b, "- **%s: %s**: %s\n", x.name, x.verb, results.OneLine(x.s.err.Error()))
		case x.s.err != nil:
			fmt.Fprintf(&b, "- **%s: stopped early**: %s\n", x.name, results.OneLine(x.s.err.Error()))
		}
	}
	b.WriteString("\nTargets (from the issue): hv at least as fast as libvirt (hv / libvirt at most 1.00 for times); " +
		"a standard checkpoint saves memory at 50% or more of the disk's write bandwidth. The benchmark does not judge them.\n\n")
	b.WriteString("How each side is timed (see bench/README.md): **hv** `hv checkpoint create VM NAME --type production|standard -o json` " +
		"from exec to exit, frozen time from the checkpoint's `frozen_seconds`; apply: `hv checkpoint apply` until `GET /1.0/vms/{name}` " +
		"says Running (standard) or Off (production), then `start` until the heartbeat event. " +
		"**libvirt** `virsh snapshot-create-as` from exec to exit: `--disk-only --quiesce --atomic --no-metadata` (external overlay, " +
		"freeze through libvirt's own agent channel), and `--memspec file=…,snapshot=external --diskspec vda,snapshot=external " +
		"--atomic --no-metadata` (libvirt pauses the guest while it saves). " +
		"**plain** raw agent + raw QMP: `guest-fsfreeze-freeze`, `blockdev-snapshot-sync`, `guest-fsfreeze-thaw` (frozen: from the " +
		"freeze's answer to the thaw's); `stop`, `migrate` to a file (`getfd`, no bandwidth limit), `blockdev-snapshot-sync`, `cont`, then fdatasync of the " +
		"file; apply: kill, a new overlay, QEMU `-incoming defer`, `migrate-incoming` from the file, `cont`, until `query-status` says running.\n")
	return results.Wrap("checkpoint", b.String())
}

func naIf(d []time.Duration, text string) string {
	if len(d) == 0 {
		return "—"
	}
	return text
}
