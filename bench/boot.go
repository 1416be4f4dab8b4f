package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
)

// Boot benchmark settings: the tiny guest's own command lines use 256M and one CPU.
const (
	bootMemMiB    = 256
	bootCPUs      = 1
	bootHeartbeat = "100ms"                // hvd's ping interval during the boot benchmark
	bootLimit     = 240 * time.Second      // one boot; far above the ~15s worst case seen on TCG
	bootPause     = 500 * time.Millisecond // between runs, so a killed QEMU's teardown is over
	bootKillLimit = 60 * time.Second
)

// bootSeries is what one generation's runs measured.
type bootSeries struct {
	gen         int
	machine     string
	image       string
	hv, plain   []bootTimes
	warmHV      bootTimes
	warmPlain   bootTimes
	hvHeartbeat string
}

// runBoot measures boot-to-heartbeat of hv vm start against the same VM on a plain QEMU
// command line, for generation 1 (SeaBIOS) and 2 (OVMF), runs alternating.
func runBoot(ctx context.Context, e *env) (string, error) {
	cl := &cleanup{}
	e.cleanup.add(cl.run)
	defer cl.run()

	h, err := startHVD(ctx, e, cl, e.hbEvery)
	if err != nil {
		return "", err
	}
	var series []bootSeries
	for _, g := range []struct {
		gen            int
		machine, image string
	}{
		{1, "pc, SeaBIOS", "tiny-bios.qcow2"},
		{2, "q35, OVMF", "tiny-uefi.qcow2"},
	} {
		s, err := bootGeneration(ctx, e, cl, h, g.gen, g.machine, g.image)
		if err != nil {
			return "", err
		}
		series = append(series, s)
	}
	return bootSection(e, series), nil
}

func bootGeneration(ctx context.Context, e *env, cl *cleanup, h *hvd, gen int, machine, image string) (bootSeries, error) {
	s := bootSeries{gen: gen, machine: machine, image: image, hvHeartbeat: h.heartbeat}
	img := filepath.Join(e.guest, image)
	name := fmt.Sprintf("boot-gen%d", gen)
	if err := h.create(ctx, api.VMCreate{Name: name, Generation: gen, CPUs: bootCPUs,
		Memory: fmt.Sprintf("%dM", bootMemMiB), Image: img}); err != nil {
		return s, err
	}
	p, err := newPlainVM(ctx, filepath.Join(h.root, fmt.Sprintf("plain-gen%d", gen)), gen, img, bootMemMiB, bootCPUs)
	if err != nil {
		return s, err
	}
	p.accel = e.host.accel
	if e.verbose {
		logf("plain command line: %s %s", e.qemu, strings.Join(p.args(), " "))
	}

	hvRun := func() (bootTimes, error) {
		d, vm, err := h.startAndWaitHeartbeat(ctx, name, e.poll, bootLimit)
		kctx, cancel := context.WithTimeout(context.Background(), bootKillLimit)
		defer cancel()
		if kerr := h.kill(kctx, name); kerr != nil && err == nil {
			err = kerr
		}
		if err != nil && vm.Directory != "" {
			err = fmt.Errorf("%w; %s", err, tail(filepath.Join(vm.Directory, "console.log")))
		}
		sleep(ctx, bootPause)
		return d, err
	}
	plainRun := func() (bootTimes, error) {
		d, err := p.bootToAgent(ctx, e, cl, bootLimit)
		sleep(ctx, bootPause)
		return d, err
	}

	// Warm-up (not counted): page cache, OVMF's first boot writing its variables.
	if s.warmHV, err = hvRun(); err != nil {
		return s, fmt.Errorf("gen %d hv warm-up: %w", gen, err)
	}
	if s.warmPlain, err = plainRun(); err != nil {
		return s, fmt.Errorf("gen %d plain warm-up: %w", gen, err)
	}
	logf("gen %d warm-up: hv %s, plain %s", gen, s.warmHV, s.warmPlain)
	for i := 1; i <= e.runs; i++ {
		dh, err := hvRun()
		if err != nil {
			return s, fmt.Errorf("gen %d hv run %d: %w", gen, i, err)
		}
		dp, err := plainRun()
		if err != nil {
			return s, fmt.Errorf("gen %d plain run %d: %w", gen, i, err)
		}
		s.hv, s.plain = append(s.hv, dh), append(s.plain, dp)
		logf("gen %d run %2d/%d: hv %s, plain %s", gen, i, e.runs, dh, dp)
	}
	return s, nil
}

func bootSection(e *env, series []bootSeries) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Boot to heartbeat: `hv vm start` vs plain QEMU\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. Median of %d runs each, alternating hv and plain, after one warm-up run of each (not counted). "+
		"Guest: the tiny test guest booting from its disk image, %d MiB, %d vCPU.\n\n",
		e.host.date, e.host.short(), e.runs, bootMemMiB, bootCPUs)
	hb := "hvd's default interval"
	if len(series) > 0 && series[0].hvHeartbeat != "" {
		hb = series[0].hvHeartbeat
	}
	how := "the arrival of hvd's `heartbeat-changed` event to `OK` on `GET /1.0/events` (nothing is polled meanwhile)"
	if e.poll > 0 {
		how = "the first `GET /1.0/vms/{name}` (polled every " + e.poll.String() + ") that shows `heartbeat: OK`"
	}
	b.WriteString("- **hv**: t0 just before the `start` request (Go client), t1 " + how +
		"; hvd pings the guest agent every " + hb + ". The VM is killed (`kill`) and Off before the next run.\n")
	b.WriteString("- **plain**: the same VM as a QEMU command line typed by hand (same machine, firmware, memory, CPUs, `-accel " + e.host.accel +
		"`, virtio-blk on a qcow2 overlay, virtio-serial agent channel); t0 just before exec, t1 the first answer to " +
		"`guest-sync-delimited` + `guest-ping` (tried again and again, 200 ms timeout). QEMU is killed after each run.\n\n")
	b.WriteString("| gen | machine | image | hv median | hv min | hv max | plain median | plain min | plain max | hv / plain | hv overhead |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range series {
		hv, pl := heartbeats(s.hv), heartbeats(s.plain)
		hm, pm := median(hv), median(pl)
		r := ratio(hm, pm)
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | **%.3f** | %+.1f%% |\n",
			s.gen, s.machine, s.image, secs(hm), secs(minDur(hv)), secs(maxDur(hv)),
			secs(pm), secs(minDur(pl)), secs(maxDur(pl)), r, (r-1)*100)
	}
	b.WriteString("\nTarget: hv adds under 10% (hv / plain below 1.10).\n\n")
	b.WriteString("Where the time goes: median time from t0 until the guest prints `" + readyMarker + "` on its serial console " +
		"(user space up, agent starting), and from then until the heartbeat / agent answer was seen.\n\n")
	b.WriteString("| gen | hv: console ready | hv: ready → heartbeat OK | plain: console ready | plain: ready → agent answer |\n")
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, s := range series {
		hr, pr := median(readies(s.hv)), median(readies(s.plain))
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", s.gen,
			secs(hr), secs(median(gaps(s.hv))), secs(pr), secs(median(gaps(s.plain))))
	}
	b.WriteString("\nEvery run, heartbeat in seconds, hv / plain:\n\n")
	for _, s := range series {
		fmt.Fprintf(&b, "- gen %d: warm-up %s / %s; runs", s.gen, secs(s.warmHV.heartbeat), secs(s.warmPlain.heartbeat))
		for i := range s.hv {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %s / %s", sep, secs(s.hv[i].heartbeat), secs(s.plain[i].heartbeat))
		}
		b.WriteString("\n")
	}
	return wrapSection("boot", b.String())
}

// gaps is, per run where the ready line was seen, the time from it to the heartbeat.
func gaps(b []bootTimes) []time.Duration {
	var d []time.Duration
	for _, x := range b {
		if x.ready > 0 {
			d = append(d, x.heartbeat-x.ready)
		}
	}
	return d
}
