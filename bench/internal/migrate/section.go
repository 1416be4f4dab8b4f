package migrate

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Goals from the issue.
const (
	migGoalRatio    = 1.10                   // hv / plain, downtime and total time
	migGoalDowntime = 300 * time.Millisecond // hv, idle guest
)

// pick returns one measure of every run.
func pick(runs []migRun, f func(migRun) time.Duration) []time.Duration {
	var d []time.Duration
	for _, r := range runs {
		d = append(d, f(r))
	}
	return d
}

var migMeasures = []struct {
	name string
	f    func(migRun) time.Duration
}{
	{"total time", func(r migRun) time.Duration { return r.total }},
	{"QEMU downtime", func(r migRun) time.Duration { return r.downtime }},
	{"guest-visible downtime (largest gap)", func(r migRun) time.Duration { return r.gaps.largest }},
	{"switch-over gap", func(r migRun) time.Duration { return r.gaps.switchover }},
	{"guest clock's largest step", func(r migRun) time.Duration { return r.gaps.guest }},
}

func medMinMax(d []time.Duration) string {
	return fmt.Sprintf("%s (%s–%s)", stats.Ms(stats.Median(d)), stats.Ms(stats.Min(d)), stats.Ms(stats.Max(d)))
}

func metText(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func migrateSection(e *harness.Env, r *migResult) string {
	var b strings.Builder
	b.WriteString("## Live migration: `hv vm move` vs the same migration by hand on plain QEMU and `virsh migrate`\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. %d moves per side and scenario after one warm-up move per side (not counted), the sides in turn "+
		"(which goes first rotates); the sides not being measured are paused. Guest: the tiny test guest from `%s` (copied, not a backing file), generation 1, "+
		"%d MiB, %d vCPU, on loopback between two \"hosts\" of the same machine. Medians, with min–max.\n\n",
		e.Host.Date, e.Host.Short(), migRuns, migImage, guest.AgentMemMiB, guest.AgentCPUs)
	migMethod(&b, r)
	for _, sc := range migScenarios {
		migTable(&b, r, sc)
	}
	migGoals(&b, r)
	migEveryRun(&b, r)
	fmt.Fprintf(&b, "Host load average (1 min) when the runs began / ended: %s / %s (2 cores).\n", r.load[0], r.load[1])
	return results.Wrap("migrate", b.String())
}

func migMethod(b *strings.Builder, r *migResult) {
	b.WriteString("- **hv**: two hvds with fresh roots, `--listen 127.0.0.1:PORT`, peered with `hv trust add` / `hv peer add` " +
		"(as e2e/migration_test.go); the VM created with `--image` and started until its heartbeat is OK. Each run is " +
		"`hv vm move VM --to PEER -o json` (default settings: TLS, QEMU's default downtime limit, no bandwidth limit, auto-converge); " +
		"**total time** is t0 just before exec of `hv` to its exit. QEMU downtime is the result's `downtime_ms`. The VM moves a→b, then b→a, and so on.\n")
	b.WriteString("- **plain**: the same QEMU command line hvd runs (devices, `-S`, chardevs, node layout; the target with the " +
		"versioned machine type and `-incoming defer`), driven over QMP with a raw client written in the benchmark, doing hv's " +
		"steps with hv's settings: target: `qemu-img create` of an empty qcow2 of the disk's size, QEMU, `tls-creds-x509` " +
		"(server, verify-peer; ECDSA P-256 certificates made by the benchmark), capabilities events, dirty-bitmaps, " +
		"pause-before-switchover, auto-converge, `tls-creds`, `nbd-server-start` with TLS, `block-export-add` writable, " +
		"`migrate-incoming`; source: `tls-creds-x509` (client), `blockdev-add` NBD with TLS, `blockdev-mirror sync=top` until " +
		"ready, the same capabilities, `tls-creds` + `tls-hostname`, `migrate`, at `pre-switchover` `block-job-cancel` (completes " +
		"the mirror), `migrate-continue`, until `completed`; then the target's `cont` (as soon as it left `inmigrate`), and the " +
		"source's NBD node, QEMU (`quit`) and disk go. Polls every 5 ms (hv waits on QEMU's events, 100 ms ticks for the mirror). " +
		"**total time** is t0 before `qemu-img create` to t1 after the source's disk is removed.\n")
	migLibvirtMethod(b, r)
	b.WriteString("- **memory with the guest paused**: where QEMU's TCG loses pages a running guest writes during a live " +
		"migration (QEMU before 9.0, `machine.LosesDirtyPages`; a guest writing to tmpfs hung on arrival in hv's e2e test), " +
		"hv stops the guest before `migrate`, so the memory goes in one pass: the disks still mirror while the guest runs, " +
		"but the downtime is the whole memory transfer. The plain side does the same (`stop` before `migrate`) on such a " +
		"host, and both count QEMU downtime from that stop. Under KVM both move the memory live.\n")
	b.WriteString("- **guest-visible downtime**: in the guest a busybox loop writes `hvtick <uptime>` to `/dev/ttyS0` every 10 ms " +
		"(`usleep 10000`). The host reads both QEMUs' console logs every 1 ms from 1 s before t0 to 1 s after t1 and notes " +
		"when each line arrives; the **largest gap** between two lines is the longest time the guest could not run (the " +
		"switch-over, or a stall from auto-converge's throttling); the **switch-over gap** is from the source's last line to " +
		"the target's first. The host's clock is the reference because the guest's is not: QEMU stops the guest's clocks " +
		"while the VM is paused (checked: a 3.2 s `hv vm pause` advanced the guest's `/proc/uptime` by 0.2 s), so the guest " +
		"misses the paused part of a gap; the table shows the largest step of the guest's uptime between two lines beside the " +
		"host-timed gap (the difference is the time the guest's clock did not see). Every run checks that both " +
		"consoles had lines, that the target's come after the source's and that the guest's uptime goes on (the same guest runs).\n")
	b.WriteString("- **scenarios**: *idle*: only the loop runs. *dirty*: also `dd` copying 4 MiB of random bytes over and over " +
		"into a 64 MiB file in `/dev/shm` (guest RAM), started before the side's first dirty move and left running.\n\n")
}

// lvRuns are the libvirt side's runs of a scenario, none where it did not run.
func (r *migResult) lvRuns(sc string) []migRun {
	if r.libvirt == nil {
		return nil
	}
	return r.libvirt.runs[sc]
}

func cell(d []time.Duration) string {
	if len(d) == 0 {
		return "—"
	}
	return medMinMax(d)
}

func ratioCell(a, b []time.Duration) string {
	if len(a) == 0 || len(b) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", stats.Ratio(stats.Median(a), stats.Median(b)))
}

func bytesCell(runs []migRun, disk bool) string {
	if len(runs) == 0 {
		return "—"
	}
	return stats.MiB(medianBytes(runs, disk))
}

func migTable(b *strings.Builder, r *migResult, sc string) {
	hv, pl, lv := r.hv.runs[sc], r.plain.runs[sc], r.lvRuns(sc)
	fmt.Fprintf(b, "### %s guest\n\n", sc)
	b.WriteString("| measure | hv | plain | libvirt | hv / plain | hv / libvirt |\n|---|---:|---:|---:|---:|---:|\n")
	for _, m := range migMeasures {
		h, p, l := pick(hv, m.f), pick(pl, m.f), pick(lv, m.f)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", m.name, cell(h), cell(p), cell(l), ratioCell(h, p), ratioCell(h, l))
	}
	own := func(r migRun) time.Duration { return r.ownTotal }
	fmt.Fprintf(b, "| the mover's own total (hvd's `total_time_ms`, libvirt's `time_elapsed`) | %s | | %s | | |\n", cell(pick(hv, own)), cell(pick(lv, own)))
	fmt.Fprintf(b, "| memory sent, median | %s | %s | %s | | |\n| disk mirrored, median | %s | %s | %s | | |\n\n",
		bytesCell(hv, false), bytesCell(pl, false), bytesCell(lv, false), bytesCell(hv, true), bytesCell(pl, true), bytesCell(lv, true))
}

func medianBytes(runs []migRun, disk bool) uint64 {
	var v []uint64
	for _, r := range runs {
		if disk {
			v = append(v, r.diskBytes)
		} else {
			v = append(v, r.memBytes)
		}
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

func migGoals(b *strings.Builder, r *migResult) {
	b.WriteString("### Goals (issue), on the medians\n\n")
	for _, sc := range migScenarios {
		hv, pl := r.hv.runs[sc], r.plain.runs[sc]
		for _, m := range []int{1, 2} { // QEMU downtime, guest-visible downtime
			h, p := stats.Median(pick(hv, migMeasures[m].f)), stats.Median(pick(pl, migMeasures[m].f))
			rt := stats.Ratio(h, p)
			fmt.Fprintf(b, "- %s guest, %s within 10%% of plain's: hv %s, plain %s, hv / plain %.2f: %s\n",
				sc, migMeasures[m].name, stats.Ms(h), stats.Ms(p), rt, metText(p > 0 && rt <= migGoalRatio))
		}
		h, p := stats.Median(pick(hv, migMeasures[0].f)), stats.Median(pick(pl, migMeasures[0].f))
		fmt.Fprintf(b, "- %s guest, total time within 10%% of plain's: hv %s, plain %s, hv / plain %.2f: %s\n",
			sc, stats.Ms(h), stats.Ms(p), stats.Ratio(h, p), metText(p > 0 && stats.Ratio(h, p) <= migGoalRatio))
	}
	idle := r.hv.runs["idle"]
	for _, m := range []int{1, 2} {
		h := stats.Median(pick(idle, migMeasures[m].f))
		fmt.Fprintf(b, "- idle guest, hv's %s at most 300 ms: %s: %s\n", migMeasures[m].name, stats.Ms(h), metText(h <= migGoalDowntime))
	}
	b.WriteString("\n")
}

func migEveryRun(b *strings.Builder, r *migResult) {
	b.WriteString("Every run (total time / QEMU downtime / largest gap / switch-over gap, ms):\n\n")
	for _, sc := range migScenarios {
		for _, s := range r.sides() {
			var v []string
			for _, x := range s.runs[sc] {
				v = append(v, fmt.Sprintf("%.0f/%.0f/%.0f/%.0f", msf(x.total), msf(x.downtime), msf(x.gaps.largest), msf(x.gaps.switchover)))
			}
			fmt.Fprintf(b, "- %s, %s: %s\n", sc, s.name, strings.Join(v, ", "))
		}
	}
	b.WriteString("\n")
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// migLibvirtMethod says how the libvirt side migrates, or why it did not run.
func migLibvirtMethod(b *strings.Builder, r *migResult) {
	if r.libvirt == nil {
		fmt.Fprintf(b, "- **libvirt** was not measured: %s.\n", r.lvErr)
		return
	}
	live := "without `--live`: libvirt's non-live migration mirrors the disk while the guest runs and stops the guest " +
		"once the mirror is ready, just before QEMU's `migrate` (libvirt's `qemuMigrationSrcRun`), which is hv's treatment " +
		"on this host (see the next point) and needs no `virsh suspend`; the target resumes the guest at the end"
	if r.lvLive {
		live = "with `--live`, as hv moves the memory live on this host"
	}
	fmt.Fprintf(b, "- **libvirt** (%s): two private libvirtds (`bench/internal/libvirt`), each in a mount namespace of its own with "+
		"its own configuration, state and socket, its own `host_uuid` (libvirt refuses to migrate to a host with its own UUID), "+
		"and in `qemu.conf` `migrate_tls_x509_cert_dir`/`default_tls_x509_cert_dir` (certificates made as the plain side's) "+
		"and its own `migration_port_min`/`max`. The domain's disk and console have one path, which each daemon's namespace "+
		"bind-mounts from a directory of its own, so that the same path names a different file on each \"host\". The domain is "+
		"hvd's VM (`pc`, BIOS, `<cpu mode='maximum'/>` = `-cpu max`, virtio-blk qcow2 copied from the image, agent channel, "+
		"balloon, rng, the console on the serial port into a file), created transient with `virsh create`. Each run is "+
		"`virsh migrate --copy-storage-all --tls --tls-destination NAME --migrateuri tcp://127.0.0.1 --listen-address 127.0.0.1 "+
		"--auto-converge --p2p DOMAIN qemu+unix:///system?socket=TARGET` %s. libvirt's disk copy is `blockdev-mirror "+
		"sync=full` into the target's NBD server with TLS, completed at `pre-switchover` as hv's; libvirt needs the target's "+
		"disk to exist (or a storage pool that holds it), so **total time** is t0 before `qemu-img create` of the empty target "+
		"disk to t1 after `virsh migrate` returned and the source's disk is removed. QEMU downtime is `downtime` of libvirt's "+
		"job-completed event on the source (libvirt counts from the guest's stop to the target's resume); memory and disk are "+
		"its `memory_processed` and `disk_processed` (with sync=full the mirror's progress counts the whole virtual disk, zeros "+
		"included, where sync=top counts the allocated part). A wrong `--tls-destination` fails at the NBD connection "+
		"(\"Certificate does not match the hostname\"): the streams use TLS. libvirt sets QEMU's `max-bandwidth` to no limit "+
		"unless `--bandwidth` is given, as hv and the plain side do; one difference in settings is libvirt's own default, "+
		"left as a libvirt user gets it: its mirror is sync=full. libvirt's total time also holds "+
		"what `virsh migrate` waits for after the stream (the target's finish, the source's confirm and QEMU's exit) "+
		"and virsh's connections to the daemons.\n",
		lvRelease(r.lvVersion), live)
}

// lvRelease is "libvirt 9.0.0" from virsh version's "Using library: libvirt 9.0.0; ...".
func lvRelease(version string) string {
	for _, part := range strings.Split(version, "; ") {
		if v, ok := strings.CutPrefix(part, "Using library: "); ok {
			return v
		}
	}
	return version
}
