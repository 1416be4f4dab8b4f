// Command bench measures hv side by side with plain QEMU and writes the results into
// bench/RESULTS.md. It is a benchmark, not a test: it never fails on speed, only when
// it cannot measure (a VM that does not boot, hvd that does not answer).
//
//	go run ./bench -guest build/guest -bin bin -out bench/RESULTS.md [-runs 10] [-only boot,memory,exec,copy,checkpoint,backup,migrate]
//
// See bench/README.md for what each benchmark measures and how to read the results.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/backup"
	"github.com/hvproject/hv/bench/internal/checkpoint"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/migrate"
	"github.com/hvproject/hv/bench/internal/results"
)

// benchmarks in the order they run; each names its RESULTS.md section.
var benchmarks = []struct {
	name string
	run  func(ctx context.Context, e *harness.Env) (section string, err error)
}{
	{"boot", runBoot},
	{"memory", runMemory},
	{"exec", runExec},
	{"copy", runCopy},
	{"checkpoint", checkpoint.Run},
	{"backup", backup.Run},
	{"migrate", migrate.Run},
}

func main() {
	guest := flag.String("guest", "build/guest", "directory holding tiny-bios.qcow2, tiny-uefi.qcow2, vmlinuz, initrd.img (make guest)")
	bin := flag.String("bin", "bin", "directory holding the built hv and hvd (make build)")
	out := flag.String("out", "bench/RESULTS.md", "results file; only the sections measured in this run are replaced")
	runs := flag.Int("runs", 10, "measured runs per series of the boot benchmark (one warm-up run more is not counted); exec, copy and checkpoint have fixed counts")
	only := flag.String("only", "", "comma-separated benchmarks to run (boot, memory, exec, copy, checkpoint, backup, migrate); default all")
	verbose := flag.Bool("v", false, "log every step")
	poll := flag.Duration("poll", 0, "hv side: poll GET /1.0/vms/{name} this often for the heartbeat instead of following hvd's event stream (0)")
	hb := flag.String("heartbeat-interval", "100ms", "hvd's --heartbeat-interval in the boot benchmark (\"\" for hvd's default)")
	flag.Parse()

	if err := run(*guest, *bin, *out, *runs, *only, *verbose, *poll, *hb); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(guest, bin, out string, runs int, only string, verbose bool, poll time.Duration, hb string) error {
	if runs < 1 {
		return fmt.Errorf("-runs: %d; give 1 or more", runs)
	}
	if poll < 0 || (poll > 0 && poll < time.Millisecond) {
		return fmt.Errorf("-poll: %s; give 0 (event stream) or 1ms and more", poll)
	}
	selected, err := selectBenchmarks(only)
	if err != nil {
		return err
	}
	e := &harness.Env{Runs: runs, Verbose: verbose, Cleanup: &harness.Cleanup{}, Poll: poll, HeartbeatEvery: hb}
	if e.Guest, err = filepath.Abs(guest); err != nil {
		return err
	}
	if e.Bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if err := checkInputs(e.Guest, e.Bin); err != nil {
		return err
	}
	if e.QEMU, err = harness.FindQEMU(); err != nil {
		return err
	}
	e.Host = results.DescribeHost(e.QEMU)

	// Every process the benchmarks start is registered with e.Cleanup and ended here:
	// on success, on error, and on SIGINT/SIGTERM (which cancel ctx, so the benchmark
	// returns and this deferred call runs).
	defer e.Cleanup.Run()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println(results.HostHeader(e.Host))
	sections := map[string]string{"host": results.HostHeader(e.Host)}
	for _, b := range benchmarks {
		if !selected[b.name] {
			continue
		}
		harness.Logf("== %s", b.name)
		sec, err := b.run(ctx, e)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s: interrupted: %w", b.name, err)
			}
			return fmt.Errorf("%s: %w", b.name, err)
		}
		fmt.Println(sec)
		sections[b.name] = sec
		// Write after each benchmark: a later failure keeps what was measured.
		if err := results.Update(out, sections, benchmarkNames()); err != nil {
			return err
		}
	}
	harness.Logf("results written to %s", out)
	return nil
}

// benchmarkNames are the benchmarks in run order: the order of their RESULTS.md sections.
func benchmarkNames() []string {
	var names []string
	for _, b := range benchmarks {
		names = append(names, b.name)
	}
	return names
}

func selectBenchmarks(only string) (map[string]bool, error) {
	sel := map[string]bool{}
	if strings.TrimSpace(only) == "" {
		for _, b := range benchmarks {
			sel[b.name] = true
		}
		return sel, nil
	}
	for _, n := range strings.Split(only, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, b := range benchmarks {
			found = found || b.name == n
		}
		if !found {
			return nil, fmt.Errorf("-only: unknown benchmark %q; use one or more of boot, memory, exec, copy, checkpoint, backup, migrate", n)
		}
		sel[n] = true
	}
	return sel, nil
}

func checkInputs(guest, bin string) error {
	for _, f := range []string{"tiny-bios.qcow2", "tiny-uefi.qcow2", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(guest, f)); err != nil {
			return fmt.Errorf("-guest: %s is missing in %s; run make guest", f, guest)
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "hvd")); err != nil {
		return fmt.Errorf("-bin: hvd is missing in %s; run make build", bin)
	}
	return nil
}
