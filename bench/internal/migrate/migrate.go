// Package migrate is the migration benchmark: `hv vm move` between two hvds
// against the same live migration done by hand between two plain QEMUs and
// `virsh migrate` between two libvirtds (see bench/README.md).
package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Migration benchmark settings: the tiny guest from its disk image, 256 MiB,
// 1 vCPU (as e2e/migration_test.go moves it), 10 moves per side and scenario after
// one warm-up move per side (not counted).
const (
	migRuns   = 10
	migImage  = "tiny-bios.qcow2"
	tickLead  = time.Second // the loop's lines read before t0
	tickTrail = time.Second // and after t1
	migSettle = time.Second // after resuming a side, before its move
	// dirtyWarm lets the dirtier run before the first dirty move of a side.
	dirtyWarm = 2 * time.Second
)

// dirtyScript starts the memory dirtier: 4 MiB of random bytes (not zeros,
// which QEMU sends as almost nothing) copied over and over into a 64 MiB file
// in /dev/shm (tmpfs: guest RAM), 4 MiB at a time.
const dirtyScript = "dd if=/dev/urandom of=/dev/shm/src bs=1M count=4 2>/dev/null && " +
	"(i=0; while :; do dd if=/dev/shm/src of=/dev/shm/dirty bs=1M seek=$((i%16*4)) count=4 conv=notrunc 2>/dev/null; i=$((i+1)); done) " +
	"</dev/null >/dev/null 2>&1 &"

var migScenarios = []string{"idle", "dirty"}

// migRun is one measured move.
type migRun struct {
	total     time.Duration // t0 to t1, the mover's wall clock
	ownTotal  time.Duration // the mover's own figure: hvd's total_time_ms, libvirt's time_elapsed
	downtime  time.Duration // as QEMU reports it (query-migrate on the source)
	gaps      tickGaps
	memBytes  uint64 // RAM sent (ram.transferred)
	diskBytes uint64
	steps     string // plain only: how long its switch-over steps took, for the log
}

// migSide is one side's VM as the runner drives it.
type migSide struct {
	name          string
	pause, resume func(context.Context) error
	guestRun      func(context.Context, string) error
	move          func(context.Context) (migRun, error)
	dirty         bool
	runs          map[string][]migRun // by scenario
}

type migResult struct {
	hv, plain *migSide
	// libvirt is nil where it could not run; lvErr says why.
	libvirt   *migSide
	lvErr     string
	lvVersion string
	lvLive    bool
	load      [2]string
}

// sides are the sides measured.
func (r *migResult) sides() []*migSide {
	s := []*migSide{r.hv, r.plain}
	if r.libvirt != nil {
		s = append(s, r.libvirt)
	}
	return s
}

// Run moves a running VM live between two hvds (hv vm move), between two
// plain QEMUs by hand with the same settings, and between two libvirtds (virsh
// migrate), in turn, for an idle guest and one dirtying its memory. The sides
// not being measured are paused, so that each move has the host to itself.
func Run(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()
	if _, err := os.Stat(filepath.Join(e.Bin, "hv")); err != nil {
		return "", fmt.Errorf("-bin: hv is missing in %s; run make build", e.Bin)
	}
	work, err := os.MkdirTemp("/tmp", "hvbmig")
	if err != nil {
		return "", err
	}
	cl.Add(func() { os.RemoveAll(work) })
	image := filepath.Join(e.Guest, migImage)
	r := &migResult{load: [2]string{results.LoadAvg()}}

	hm, err := setupHVMigration(ctx, e, cl, image)
	if err != nil {
		return "", fmt.Errorf("hv side: %w", err)
	}
	r.hv = &migSide{name: "hv", pause: hm.pause, resume: hm.resume, guestRun: hm.guestRun, move: hm.move, runs: map[string][]migRun{}}
	if err := hm.pause(ctx); err != nil {
		return "", err
	}
	pm, err := setupPlainMigration(ctx, e, cl, work, image)
	if err != nil {
		return "", fmt.Errorf("plain side: %w", err)
	}
	r.plain = &migSide{name: "plain", pause: pm.pause, resume: pm.resume, guestRun: pm.guestRun,
		move: func(ctx context.Context) (migRun, error) { return pm.move(ctx, e, cl) }, runs: map[string][]migRun{}}
	if err := pm.pause(ctx); err != nil {
		return "", err
	}
	setupLibvirtSide(ctx, e, cl, work, image, r)
	for _, s := range r.sides() {
		if err := migOne(ctx, s, "warm-up", 0); err != nil {
			return "", fmt.Errorf("%s, warm-up move: %w", s.name, err)
		}
	}
	for _, sc := range migScenarios {
		for i := 1; i <= migRuns; i++ {
			sides := r.sides()
			order := append(sides[i%len(sides):], sides[:i%len(sides)]...) // which goes first rotates
			for _, s := range order {
				if err := migOne(ctx, s, sc, i); err != nil {
					return "", fmt.Errorf("%s, %s guest, run %d: %w", s.name, sc, i, err)
				}
			}
		}
	}
	r.load[1] = results.LoadAvg()
	return migrateSection(e, r), nil
}

// migOne resumes a side, starts its dirtier when the scenario wants it, moves
// its VM once and pauses it again.
func migOne(ctx context.Context, s *migSide, scenario string, i int) error {
	if err := s.resume(ctx); err != nil {
		return err
	}
	wait := migSettle
	if scenario == "dirty" && !s.dirty {
		if err := s.guestRun(ctx, dirtyScript); err != nil {
			return fmt.Errorf("starting the memory dirtier: %w", err)
		}
		s.dirty, wait = true, dirtyWarm
	}
	harness.Sleep(ctx, wait)
	run, err := s.move(ctx)
	if err != nil {
		return err
	}
	s.runs[scenario] = append(s.runs[scenario], run)
	harness.Logf("migrate %s %s %d/%d: total %s, QEMU downtime %s, guest gap %s (switch-over %s, guest clock %s), memory %s",
		scenario, s.name, i, migRuns, stats.Ms(run.total), stats.Ms(run.downtime), stats.Ms(run.gaps.largest), stats.Ms(run.gaps.switchover),
		stats.Ms(run.gaps.guest), stats.MiB(run.memBytes))
	if run.steps != "" {
		harness.Logf("migrate %s %s %d/%d: %s", scenario, s.name, i, migRuns, run.steps)
	}
	return s.pause(ctx)
}

// setupLibvirtSide adds the libvirt side to r, paused, or notes in r why it
// could not (libvirt missing, not root): the other sides are measured anyway.
func setupLibvirtSide(ctx context.Context, e *harness.Env, cl *harness.Cleanup, work, image string, r *migResult) {
	lcl := &harness.Cleanup{} // run at once when the side fails, so nothing of it runs beside the others
	cl.Add(lcl.Run)
	lm, err := setupLibvirtMigration(ctx, e, lcl, work, image)
	if err == nil {
		err = lm.pause(ctx)
	}
	if err != nil {
		lcl.Run()
		r.lvErr = err.Error()
		harness.Logf("migrate: libvirt side not measured: %v", err)
		return
	}
	r.lvVersion, r.lvLive = lm.Version, lm.live
	r.libvirt = &migSide{name: "libvirt", pause: lm.pause, resume: lm.resume, guestRun: lm.guestRun, move: lm.move, runs: map[string][]migRun{}}
}
