package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Memory benchmark settings.
const (
	memVMs    = 3
	memGuest  = "128M"
	memSettle = 3 * time.Second
	memLimit  = 240 * time.Second
)

type memResult struct {
	rss0, rssCreated, rssRunning uint64 // hvd: no VMs, VMs created (Off), VMs running
	qemu                         []qemuRSS
	heartbeat                    string
}

type qemuRSS struct {
	name string
	pid  int
	rss  uint64
	boot time.Duration
}

// runMemory measures how much hvd's resident memory grows per running VM.
func runMemory(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	// hvd as it is run for real: its default heartbeat interval.
	h, err := hvside.StartHVD(ctx, e, cl, "")
	if err != nil {
		return "", err
	}
	pid := h.PID()
	var r memResult
	r.heartbeat = h.Heartbeat
	// One request first, so the HTTP server's lazily built parts count in the baseline.
	if _, err := h.Client.ListVMs(ctx); err != nil {
		return "", err
	}
	harness.Sleep(ctx, memSettle)
	if r.rss0, err = settledRSS(ctx, pid); err != nil {
		return "", err
	}
	harness.Logf("hvd RSS with no VMs: %s", stats.MiB(r.rss0))

	names := make([]string, memVMs)
	for i := range names {
		names[i] = fmt.Sprintf("mem%d", i+1)
		if err := h.Create(ctx, api.VMCreate{Name: names[i], Generation: 1, CPUs: 1, Memory: memGuest,
			Kernel: filepath.Join(e.Guest, "vmlinuz"), Initrd: filepath.Join(e.Guest, "initrd.img"),
			Cmdline: "console=ttyS0"}); err != nil {
			return "", err
		}
	}
	harness.Sleep(ctx, memSettle)
	if r.rssCreated, err = settledRSS(ctx, pid); err != nil {
		return "", err
	}
	harness.Logf("hvd RSS with %d VMs created (Off): %s", memVMs, stats.MiB(r.rssCreated))

	// One at a time: the host has two cores, and TCG boots slowly when they compete.
	for _, n := range names {
		d, vm, err := h.StartAndWaitHeartbeat(ctx, n, e.Poll, memLimit)
		if err != nil {
			return "", err
		}
		r.qemu = append(r.qemu, qemuRSS{name: n, pid: vm.PID, boot: d.Heartbeat})
		harness.Logf("%s running, heartbeat OK after %s (QEMU pid %d)", n, stats.Ms(d.Heartbeat), vm.PID)
	}
	harness.Sleep(ctx, memSettle)
	if r.rssRunning, err = settledRSS(ctx, pid); err != nil {
		return "", err
	}
	for i := range r.qemu {
		if r.qemu[i].pid > 0 {
			r.qemu[i].rss, _ = harness.RSS(r.qemu[i].pid)
		}
	}
	harness.Logf("hvd RSS with %d VMs running: %s", memVMs, stats.MiB(r.rssRunning))
	kctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, n := range names {
		if err := h.Kill(kctx, n); err != nil {
			return "", err
		}
	}
	return memorySection(e, r), nil
}

// settledRSS reads VmRSS five times, 200ms apart, and returns the median: RSS of a Go
// process moves with the garbage collector.
func settledRSS(ctx context.Context, pid int) (uint64, error) {
	var v []uint64
	for i := 0; i < 5; i++ {
		x, err := harness.RSS(pid)
		if err != nil {
			return 0, fmt.Errorf("hvd RSS: %w", err)
		}
		v = append(v, x)
		harness.Sleep(ctx, 200*time.Millisecond)
	}
	slices.Sort(v)
	return v[len(v)/2], ctx.Err()
}

func memorySection(e *harness.Env, r memResult) string {
	var b strings.Builder
	hb := "hvd's default heartbeat interval"
	if r.heartbeat != "" {
		hb = "heartbeat every " + r.heartbeat
	}
	fmt.Fprintf(&b, "## hvd memory per running VM\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. hvd with a fresh root (%s); VmRSS of hvd from /proc/PID/status, "+
		"median of 5 reads 200 ms apart, %s after each step. VMs: direct kernel boot of the tiny guest "+
		"(vmlinuz + initrd.img, no disk), %s, 1 vCPU, started one after another, each until `heartbeat: OK`.\n\n",
		e.Host.Date, e.Host.Short(), hb, memSettle, memGuest)
	per := (float64(r.rssRunning) - float64(r.rss0)) / memVMs
	b.WriteString("| hvd state | hvd RSS | growth vs no VMs |\n|---|---:|---:|\n")
	fmt.Fprintf(&b, "| no VMs | %s | |\n", stats.MiB(r.rss0))
	fmt.Fprintf(&b, "| %d VMs created (Off) | %s | %s |\n", memVMs, stats.MiB(r.rssCreated), stats.SignedMiB(float64(r.rssCreated)-float64(r.rss0)))
	fmt.Fprintf(&b, "| %d VMs running | %s | %s |\n", memVMs, stats.MiB(r.rssRunning), stats.SignedMiB(float64(r.rssRunning)-float64(r.rss0)))
	fmt.Fprintf(&b, "\n**hvd overhead per running VM: %s** ((RSS with %d running − RSS with none) / %d).\n\n", stats.SignedMiB(per), memVMs, memVMs)
	b.WriteString("For context, each VM's QEMU process (not hvd):\n\n")
	b.WriteString("| VM | guest memory | QEMU RSS | boot to heartbeat |\n|---|---:|---:|---:|\n")
	for _, q := range r.qemu {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", q.name, memGuest, stats.MiB(q.rss), stats.Secs(q.boot))
	}
	return results.Wrap("memory", b.String())
}
