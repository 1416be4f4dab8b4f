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
)

// benchmarks in the order they run; each names its RESULTS.md section.
var benchmarks = []struct {
	name string
	run  func(ctx context.Context, e *env) (section string, err error)
}{
	{"boot", runBoot},
	{"memory", runMemory},
	{"exec", runExec},
	{"copy", runCopy},
	{"checkpoint", runCheckpoint},
	{"backup", runBackup},
	{"migrate", runMigrate},
}

// env is what every benchmark gets: the inputs and the host's description.
type env struct {
	guest   string // directory of the tiny test guest
	bin     string // directory of hv and hvd
	runs    int
	qemu    string // qemu-system-x86_64
	host    hostInfo
	cleanup *cleanup
	verbose bool
	poll    time.Duration // how often the VM is asked for its heartbeat
	hbEvery string        // hvd's --heartbeat-interval in the boot benchmark
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
	e := &env{runs: runs, verbose: verbose, cleanup: &cleanup{}, poll: poll, hbEvery: hb}
	if e.guest, err = filepath.Abs(guest); err != nil {
		return err
	}
	if e.bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if err := checkInputs(e.guest, e.bin); err != nil {
		return err
	}
	if e.qemu, err = findQEMU(); err != nil {
		return err
	}
	e.host = describeHost(e.qemu)

	// Every process the benchmarks start is registered with e.cleanup and ended here:
	// on success, on error, and on SIGINT/SIGTERM (which cancel ctx, so the benchmark
	// returns and this deferred call runs).
	defer e.cleanup.run()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println(hostHeader(e.host))
	sections := map[string]string{"host": hostHeader(e.host)}
	for _, b := range benchmarks {
		if !selected[b.name] {
			continue
		}
		logf("== %s", b.name)
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
		if err := updateResults(out, sections); err != nil {
			return err
		}
	}
	logf("results written to %s", out)
	return nil
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

// logf prints progress to stderr, so stdout holds only the tables.
func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// cleanup holds the undo steps of everything started, run last-in first-out.
type cleanup struct{ fns []func() }

func (c *cleanup) add(fn func()) { c.fns = append(c.fns, fn) }

func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}
