package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/plain"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Exec benchmark settings: the issue asks for the median of 50.
const (
	execRuns   = 50
	execWarmup = 5 // runs of each series first, not counted
)

type execResult struct {
	api, cli, plain []time.Duration
	hvBoot          time.Duration
	plainBoot       time.Duration
	heartbeat       string
	load            [2]string // host load average at start and end
}

// runExec measures the latency of running `true` in a guest: through hv (the Go client
// as `hv vm exec` uses it, and the hv CLI process itself) and through plain guest-exec +
// guest-exec-status on the agent socket of a QEMU started by hand.
func runExec(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	hvBin := filepath.Join(e.Bin, "hv")
	if _, err := os.Stat(hvBin); err != nil {
		return "", fmt.Errorf("-bin: hv is missing in %s; run make build", e.Bin)
	}
	const name = "exec1"
	h, bt, err := hvside.StartAgentVM(ctx, e, cl, name)
	if err != nil {
		return "", err
	}
	r := execResult{hvBoot: bt.Heartbeat, heartbeat: h.Heartbeat, load: [2]string{results.LoadAvg()}}
	apiRun := func() (time.Duration, error) {
		t0 := time.Now()
		_, err := hvside.Exec(ctx, h.Client, name, "true")
		return time.Since(t0), err
	}
	sock := h.Client.Socket()
	cliRun := func() (time.Duration, error) {
		cmd := exec.CommandContext(ctx, hvBin, "--socket", sock, "vm", "exec", name, "--", "true")
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return d, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, out)
		}
		return d, nil
	}
	// The two hv series alternate run by run, so that drift hits both alike.
	for i := -execWarmup + 1; i <= execRuns; i++ {
		da, err := apiRun()
		if err != nil {
			return "", fmt.Errorf("hv API run %d: %w", i, err)
		}
		dc, err := cliRun()
		if err != nil {
			return "", fmt.Errorf("hv CLI run %d: %w", i, err)
		}
		if i > 0 {
			r.api, r.cli = append(r.api, da), append(r.cli, dc)
		}
		if e.Verbose || i%10 == 0 {
			harness.Logf("exec run %2d/%d: hv API %s, hv CLI %s", i, execRuns, stats.Ms(da), stats.Ms(dc))
		}
	}
	if err := hvside.StopAgentVM(ctx, h, name); err != nil {
		return "", err
	}

	v, err := plain.StartKernelVM(ctx, e, cl, filepath.Join(h.Root, "plain-exec"))
	if err != nil {
		return "", err
	}
	defer v.Stop()
	r.plainBoot = v.Boot
	for i := -execWarmup + 1; i <= execRuns; i++ {
		t0 := time.Now()
		st, err := v.Agent.Run(ctx, guest.AgentCallWait, "true")
		d := time.Since(t0)
		if err == nil && (st.ExitCode != 0 || st.Signal != 0) {
			err = fmt.Errorf("true in the guest: exit code %d, signal %d", st.ExitCode, st.Signal)
		}
		if err != nil {
			return "", fmt.Errorf("plain run %d: %w", i, err)
		}
		if i > 0 {
			r.plain = append(r.plain, d)
		}
		if e.Verbose || i%10 == 0 {
			harness.Logf("exec run %2d/%d: plain %s", i, execRuns, stats.Ms(d))
		}
	}
	r.load[1] = results.LoadAvg()
	return execSection(e, r), nil
}

func execSection(e *harness.Env, r execResult) string {
	var b strings.Builder
	hb := "hvd's default heartbeat interval"
	if r.heartbeat != "" {
		hb = "heartbeat every " + r.heartbeat
	}
	fmt.Fprintf(&b, "## Exec latency: `hv vm exec NAME -- true` vs plain guest-exec\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. %d runs of each series after %d warm-up runs (not counted). %s "+
		"One VM at a time: first hv's (all hv runs), then the plain one.\n\n",
		e.Host.Date, e.Host.Short(), execRuns, execWarmup, guest.AgentText())
	b.WriteString("- **hv API**: hvd with a fresh root (" + hb + "); t0 just before `POST /1.0/vms/{name}/exec` " +
		"with `[\"true\"]` (Go client `Exec`), t1 when `WaitOperation` returned the finished operation and its result " +
		"(exit code 0) was decoded: what `hv vm exec` does inside.\n")
	b.WriteString("- **hv CLI**: the user-visible latency: t0 just before exec of `bin/hv --socket … vm exec NAME -- true`, " +
		"t1 when that process has exited (status 0); includes starting hv. Runs alternate with the API runs.\n")
	b.WriteString("- **plain**: the same guest on a QEMU command line typed by hand (as in the boot benchmark, " +
		"`-kernel`/`-initrd` instead of a disk), and a minimal guest-agent client written in the benchmark " +
		"(not hv's `internal/qga`): one unix socket, one `guest-sync-delimited` when connecting, then JSON lines. " +
		"t0 just before `guest-exec` `{\"path\":\"true\",\"capture-output\":true}`, t1 when `guest-exec-status` says " +
		"exited; the first poll at once, then after 10 ms doubling up to 200 ms, the backoff hv's agent client uses.\n\n")
	b.WriteString("| series | median | p90 | min | max |\n|---|---:|---:|---:|---:|\n")
	for _, s := range []struct {
		name string
		d    []time.Duration
	}{
		{"hv API (Exec + WaitOperation)", r.api},
		{"hv CLI (`hv vm exec` process)", r.cli},
		{"plain (guest-exec + guest-exec-status)", r.plain},
	} {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", s.name, msec(stats.Median(s.d)), msec(stats.P90(s.d)), msec(stats.Min(s.d)), msec(stats.Max(s.d)))
	}
	ra, rc := stats.Ratio(stats.Median(r.api), stats.Median(r.plain)), stats.Ratio(stats.Median(r.cli), stats.Median(r.plain))
	fmt.Fprintf(&b, "\n**hv API / plain: %.2f** (%+.1f ms); **hv CLI / plain: %.2f** (%+.1f ms), ratios of the medians.\n\n",
		ra, msDiff(stats.Median(r.api), stats.Median(r.plain)), rc, msDiff(stats.Median(r.cli), stats.Median(r.plain)))
	b.WriteString("Both sides pay the agent's own work (fork and exec of `true` in the guest, and the polls until it " +
		"has exited: under TCG the guest is slow, and the poll that sees the exit comes after one backoff step or more). " +
		"hv adds the REST round trips (exec request, operation wait), hvd's scheduling of the operation and its " +
		"shared agent connection (its heartbeat pings take turns with the exec); the CLI adds starting the `hv` process.\n\n")
	fmt.Fprintf(&b, "Boot to agent, for context: hv %s (heartbeat OK), plain %s (first agent answer). "+
		"Host load average (1 min) when the runs began / ended: %s / %s (2 cores; the benchmark's own VM and processes count in it, what is well above 1 to 2 is other work).\n\n",
		stats.Secs(r.hvBoot), stats.Secs(r.plainBoot), r.load[0], r.load[1])
	b.WriteString("Every run, ms:\n\n")
	for _, s := range []struct {
		name string
		d    []time.Duration
	}{{"hv API", r.api}, {"hv CLI", r.cli}, {"plain", r.plain}} {
		var v []string
		for _, d := range s.d {
			v = append(v, fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)))
		}
		fmt.Fprintf(&b, "- %s: %s\n", s.name, strings.Join(v, " "))
	}
	return results.Wrap("exec", b.String())
}

// msec is a duration in milliseconds with one decimal.
func msec(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func msDiff(a, b time.Duration) float64 { return float64(a-b) / float64(time.Millisecond) }
