package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/plain"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
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
	hv, plain   []guest.BootTimes
	warmHV      guest.BootTimes
	warmPlain   guest.BootTimes
	hvHeartbeat string
}

// runBoot measures boot-to-heartbeat of hv vm start against the same VM on a plain QEMU
// command line, for generation 1 (SeaBIOS) and 2 (OVMF), runs alternating.
func runBoot(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	h, err := hvside.StartHVD(ctx, e, cl, e.HeartbeatEvery)
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

func bootGeneration(ctx context.Context, e *harness.Env, cl *harness.Cleanup, h *hvside.HVD, gen int, machine, image string) (bootSeries, error) {
	s := bootSeries{gen: gen, machine: machine, image: image, hvHeartbeat: h.Heartbeat}
	img := filepath.Join(e.Guest, image)
	name := fmt.Sprintf("boot-gen%d", gen)
	if err := h.Create(ctx, api.VMCreate{Name: name, Generation: gen, CPUs: bootCPUs,
		Memory: fmt.Sprintf("%dM", bootMemMiB), Image: img}); err != nil {
		return s, err
	}
	p, err := plain.NewVM(ctx, filepath.Join(h.Root, fmt.Sprintf("plain-gen%d", gen)), gen, img, bootMemMiB, bootCPUs)
	if err != nil {
		return s, err
	}
	p.Accel = e.Host.Accel
	if e.Verbose {
		harness.Logf("plain command line: %s %s", e.QEMU, strings.Join(p.Args(), " "))
	}

	hvRun := func() (guest.BootTimes, error) {
		d, vm, err := h.StartAndWaitHeartbeat(ctx, name, e.Poll, bootLimit)
		kctx, cancel := context.WithTimeout(context.Background(), bootKillLimit)
		defer cancel()
		if kerr := h.Kill(kctx, name); kerr != nil && err == nil {
			err = kerr
		}
		if err != nil && vm.Directory != "" {
			err = fmt.Errorf("%w; %s", err, harness.Tail(filepath.Join(vm.Directory, "console.log")))
		}
		harness.Sleep(ctx, bootPause)
		return d, err
	}
	plainRun := func() (guest.BootTimes, error) {
		d, err := p.BootToAgent(ctx, e, cl, bootLimit)
		harness.Sleep(ctx, bootPause)
		return d, err
	}

	// Warm-up (not counted): page cache, OVMF's first boot writing its variables.
	if s.warmHV, err = hvRun(); err != nil {
		return s, fmt.Errorf("gen %d hv warm-up: %w", gen, err)
	}
	if s.warmPlain, err = plainRun(); err != nil {
		return s, fmt.Errorf("gen %d plain warm-up: %w", gen, err)
	}
	harness.Logf("gen %d warm-up: hv %s, plain %s", gen, s.warmHV, s.warmPlain)
	for i := 1; i <= e.Runs; i++ {
		dh, err := hvRun()
		if err != nil {
			return s, fmt.Errorf("gen %d hv run %d: %w", gen, i, err)
		}
		dp, err := plainRun()
		if err != nil {
			return s, fmt.Errorf("gen %d plain run %d: %w", gen, i, err)
		}
		s.hv, s.plain = append(s.hv, dh), append(s.plain, dp)
		harness.Logf("gen %d run %2d/%d: hv %s, plain %s", gen, i, e.Runs, dh, dp)
	}
	return s, nil
}

func bootSection(e *harness.Env, series []bootSeries) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Boot to heartbeat: `hv vm start` vs plain QEMU\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. Median of %d runs each, alternating hv and plain, after one warm-up run of each (not counted). "+
		"Guest: the tiny test guest booting from its disk image, %d MiB, %d vCPU.\n\n",
		e.Host.Date, e.Host.Short(), e.Runs, bootMemMiB, bootCPUs)
	hb := "hvd's default interval"
	if len(series) > 0 && series[0].hvHeartbeat != "" {
		hb = series[0].hvHeartbeat
	}
	how := "the arrival of hvd's `heartbeat-changed` event to `OK` on `GET /1.0/events` (nothing is polled meanwhile)"
	if e.Poll > 0 {
		how = "the first `GET /1.0/vms/{name}` (polled every " + e.Poll.String() + ") that shows `heartbeat: OK`"
	}
	b.WriteString("- **hv**: t0 just before the `start` request (Go client), t1 " + how +
		"; hvd pings the guest agent every " + hb + ". The VM is killed (`kill`) and Off before the next run.\n")
	b.WriteString("- **plain**: the same VM as a QEMU command line typed by hand (same machine, firmware, memory, CPUs, `-accel " + e.Host.Accel +
		"`, virtio-blk on a qcow2 overlay, virtio-serial agent channel); t0 just before exec, t1 the first answer to " +
		"`guest-sync-delimited` + `guest-ping` (tried again and again, 200 ms timeout). QEMU is killed after each run.\n\n")
	b.WriteString("| gen | machine | image | hv median | hv min | hv max | plain median | plain min | plain max | hv / plain | hv overhead |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range series {
		hv, pl := guest.Heartbeats(s.hv), guest.Heartbeats(s.plain)
		hm, pm := stats.Median(hv), stats.Median(pl)
		r := stats.Ratio(hm, pm)
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | **%.3f** | %+.1f%% |\n",
			s.gen, s.machine, s.image, stats.Secs(hm), stats.Secs(stats.Min(hv)), stats.Secs(stats.Max(hv)),
			stats.Secs(pm), stats.Secs(stats.Min(pl)), stats.Secs(stats.Max(pl)), r, (r-1)*100)
	}
	b.WriteString("\nTarget: hv adds under 10% (hv / plain below 1.10).\n\n")
	b.WriteString("Where the time goes: median time from t0 until the guest prints `" + guest.ReadyMarker + "` on its serial console " +
		"(user space up, agent starting), and from then until the heartbeat / agent answer was seen.\n\n")
	b.WriteString("| gen | hv: console ready | hv: ready → heartbeat OK | plain: console ready | plain: ready → agent answer |\n")
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, s := range series {
		hr, pr := stats.Median(guest.Readies(s.hv)), stats.Median(guest.Readies(s.plain))
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s |\n", s.gen,
			stats.Secs(hr), stats.Secs(stats.Median(gaps(s.hv))), stats.Secs(pr), stats.Secs(stats.Median(gaps(s.plain))))
	}
	b.WriteString("\nEvery run, heartbeat in seconds, hv / plain:\n\n")
	for _, s := range series {
		fmt.Fprintf(&b, "- gen %d: warm-up %s / %s; runs", s.gen, stats.Secs(s.warmHV.Heartbeat), stats.Secs(s.warmPlain.Heartbeat))
		for i := range s.hv {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %s / %s", sep, stats.Secs(s.hv[i].Heartbeat), stats.Secs(s.plain[i].Heartbeat))
		}
		b.WriteString("\n")
	}
	return results.Wrap("boot", b.String())
}

// gaps is, per run where the ready line was seen, the time from it to the heartbeat.
func gaps(b []guest.BootTimes) []time.Duration {
	var d []time.Duration
	for _, x := range b {
		if x.Ready > 0 {
			d = append(d, x.Heartbeat-x.Ready)
		}
	}
	return d
}
