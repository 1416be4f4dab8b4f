package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/nbd"
)

// hv side: one hvd and its VM; the API path and the CLI take turns.

type bkHVSide struct {
	r      *bkResult
	h      *hvside.HVD
	hvBin  string
	work   string
	images []string // the VM's disk images, whose cached pages are dropped
	useCLI bool
	repo   string // the CLI's repository: the last full's, where the incrementals go
	ref    string // the newest reference point, the incrementals' "since"
}

// alive: the hv side still has something to measure.
func (s *bkHVSide) alive() bool {
	return s.r.hvAPI.err == nil || (s.useCLI && s.r.hvCLI.err == nil)
}

// fail stops both hv paths.
func (s *bkHVSide) fail(step string, err error) {
	err = fmt.Errorf("%s: %w", step, err)
	if s.r.hvCLI.err == nil && s.r.hvCLI.na == "" {
		s.r.hvCLI.err = err
	}
	if s.r.hvAPI.err == nil {
		s.r.hvAPI.err = err
	}
	harness.Logf("hv: %v", err)
}

// bkStartHV starts hvd, creates the VM from the boot image and the data disk from
// raw (hvd converts it into the VM's directory), boots it and checks its disks.
func bkStartHV(ctx context.Context, e *harness.Env, cl *harness.Cleanup, r *bkResult, raw, work string) (*bkHVSide, error) {
	s := &bkHVSide{r: r, hvBin: filepath.Join(e.Bin, "hv"), work: work}
	if help, err := exec.CommandContext(ctx, s.hvBin, "backup", "create", "--help").CombinedOutput(); err != nil || !strings.Contains(string(help), "--full") {
		r.hvCLI.na = fmt.Sprintf("`%s backup create --help` does not offer --full (this hv has no built-in backup yet)", s.hvBin)
		harness.Logf("hv CLI: not measured: %s", r.hvCLI.na)
	}
	s.useCLI = r.hvCLI.na == ""
	var err error
	if s.h, err = hvside.StartHVD(ctx, e, cl, ""); err != nil {
		return s, fmt.Errorf("hvd: %w", err)
	}
	if err := s.h.Create(ctx, api.VMCreate{Name: bkVM, Generation: 1, CPUs: bkCPUs, Memory: fmt.Sprintf("%dM", bkMemMiB),
		Image: filepath.Join(e.Guest, bkBootImage)}); err != nil {
		return s, err
	}
	t0 := time.Now()
	op, err := s.h.Client.AddDisk(ctx, bkVM, api.DiskAdd{Name: bkDiskName, Path: raw})
	if err == nil {
		_, err = s.h.Client.WaitOperation(ctx, op.ID, nil)
	}
	if err != nil {
		return s, fmt.Errorf("add the data disk: %w", err)
	}
	vm, err := s.h.Client.GetVM(ctx, bkVM)
	if err != nil {
		return s, err
	}
	data := ""
	for _, d := range vm.Disks {
		if d.Name == bkDiskName {
			data = d.Path
		}
		s.images = append(s.images, d.Path)
	}
	if data == "" || len(vm.Disks) != 2 {
		return s, fmt.Errorf("the VM's disks are %+v; want the boot disk and %s", vm.Disks, bkDiskName)
	}
	harness.Logf("hv: data disk imported into %s in %s", data, stats.Ms(time.Since(t0)))

	poll := e.Poll
	for deadline := time.Now().Add(10 * time.Second); poll == 0 && !s.h.EventsLive(); {
		if time.Now().After(deadline) {
			poll = 100 * time.Millisecond
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	bt, _, err := s.h.StartAndWaitHeartbeat(ctx, bkVM, poll, guest.AgentLimit)
	if err != nil {
		return s, fmt.Errorf("boot: %w", err)
	}
	harness.Logf("hv VM %s: heartbeat OK after %s", bkVM, stats.Ms(bt.Heartbeat))
	if _, err := hvside.ExecLimit(ctx, s.h.Client, bkVM, time.Minute, "/bin/sh", "-c", bkCheckScript); err != nil {
		return s, fmt.Errorf("disks in the guest: %w", err)
	}
	return s, nil
}

// cli runs `hv backup create` into repo and decodes its report; t0 just before exec,
// t1 when it exited.
func (s *bkHVSide) cli(ctx context.Context, repo string, full bool) (bkRun, bkCLIReport, error) {
	var rep bkCLIReport
	args := []string{"--socket", s.h.Client.Socket(), "-q", "-o", "json", "backup", "create", bkVM, "--repo", repo}
	if full {
		args = append(args, "--full")
	}
	cmd := exec.CommandContext(ctx, s.hvBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return bkRun{}, rep, fmt.Errorf("hv %s: %w: %s", strings.Join(args[5:], " "), err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		return bkRun{}, rep, fmt.Errorf("hv %s -o json: %w: %.300q", strings.Join(args[5:], " "), err, stdout.String())
	}
	kind := "incremental"
	if full {
		kind = "full"
	}
	c := &s.r.hvCLI
	if rep.Kind != kind {
		c.note("a backup asked to be %s was stored as %s", kind, rep.Kind)
	}
	if !rep.Finished {
		c.note("hvd did not make backup %s a reference point", rep.ID)
	}
	if rep.Consistency != api.ConsistencyApplication {
		c.note("consistency %s: %s", rep.Consistency, rep.ConsistencyReason)
	}
	for _, d := range rep.Disks {
		if !full && d.Full {
			c.note("an incremental read disk %s whole: %s", d.Name, d.FullReason)
		}
	}
	return bkRun{d: d, bytes: rep.ChangedBytes}, rep, nil
}

// api is one backup through the API (bkAPIBackup), since s.ref when incremental.
// Without the CLI (or once it failed) the backup is finished and becomes the
// reference point; otherwise it is aborted, so that the CLI's stays the newest and
// the CLI run after it reads the same changes.
func (s *bkHVSide) api(ctx context.Context, incremental bool) (bkRun, api.Backup, error) {
	since := ""
	if incremental {
		since = s.ref
	}
	finish := !s.useCLI || s.r.hvCLI.err != nil
	run, b, err := bkAPIBackup(ctx, s.h.Client, bkVM, since, finish)
	if err != nil {
		return run, b, err
	}
	if finish {
		s.ref = b.ID
	}
	a := &s.r.hvAPI
	if b.FrozenSeconds > 0 {
		s.r.frozen = append(s.r.frozen, time.Duration(b.FrozenSeconds*float64(time.Second)))
	}
	if b.Consistency != api.ConsistencyApplication {
		a.note("consistency %s: %s", b.Consistency, b.ConsistencyReason)
	}
	for _, d := range b.Disks {
		if incremental && !d.Incremental {
			a.note("an incremental read disk %s whole: %s", d.Name, d.FullReason)
		}
	}
	return run, b, nil
}

// full is run i of the full backups: the API path, then the CLI into a fresh
// repository (the previous one is removed; the last stays for the incrementals).
func (s *bkHVSide) full(ctx context.Context, i int) {
	if a := &s.r.hvAPI; a.err == nil {
		s.r.dropped(bkDrop(s.images...))
		run, _, err := s.api(ctx, false)
		if err != nil {
			a.err = fmt.Errorf("full backup: %w", err)
			harness.Logf("hv API: %v", a.err)
		} else {
			a.full = append(a.full, run)
			harness.Logf("hv API full %d/%d: %s (open after %s), %s read, %s", i, bkRuns, stats.Ms(run.d), stats.Ms(run.open), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
		}
	}
	c := &s.r.hvCLI
	if !s.useCLI || c.err != nil {
		return
	}
	if s.repo != "" {
		os.RemoveAll(s.repo)
	}
	s.repo = filepath.Join(s.work, fmt.Sprintf("repo%d", i))
	s.r.dropped(bkDrop(s.images...))
	run, rep, err := s.cli(ctx, s.repo, true)
	if err != nil {
		c.err = fmt.Errorf("full backup: %w", err)
		harness.Logf("hv CLI: %v", c.err)
		return
	}
	s.ref = rep.Reference
	c.full = append(c.full, run)
	harness.Logf("hv CLI full %d/%d: %s, %s read, %s", i, bkRuns, stats.Ms(run.d), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// startIncrementals makes sure there is a reference point to start from: without a
// CLI full, one more API full, finished, not counted.
func (s *bkHVSide) startIncrementals(ctx context.Context) {
	if s.ref == "" && s.r.hvAPI.err == nil {
		if _, b, err := bkAPIBackup(ctx, s.h.Client, bkVM, "", true); err == nil {
			s.ref = b.ID
		}
	}
	if s.ref == "" {
		s.fail("incremental backups", errors.New("no reference point to start from: no full backup finished"))
	}
}

// write changes pct% of the data disk in the guest (not timed in the backups).
func (s *bkHVSide) write(ctx context.Context, round, pct int) {
	t0 := time.Now()
	if _, err := hvside.ExecLimit(ctx, s.h.Client, bkVM, bkWriteLimit, "/bin/sh", "-c", bkChangeScript(round, pct)); err != nil {
		s.fail(fmt.Sprintf("writing %d%% of the data disk in the guest", pct), err)
		return
	}
	s.r.writeHV[pct] = append(s.r.writeHV[pct], time.Since(t0))
}

// incremental backs up the changes written last: the API path, then the CLI.
func (s *bkHVSide) incremental(ctx context.Context, round, pct int) {
	if a := &s.r.hvAPI; a.err == nil {
		s.r.dropped(bkDrop(s.images...))
		run, b, err := s.api(ctx, true)
		if err != nil {
			a.err = fmt.Errorf("incremental backup (%d%%): %w", pct, err)
			harness.Logf("hv API: %v", a.err)
		} else {
			var changed int64
			for _, d := range b.Disks {
				changed += d.ChangedBytes
			}
			s.r.changed[pct] = append(s.r.changed[pct], changed)
			a.incr[pct] = append(a.incr[pct], run)
			harness.Logf("hv API incremental round %d, %d%%: %s (open after %s), changed %s, %s read, %s",
				round, pct, stats.Ms(run.d), stats.Ms(run.open), stats.MiB(uint64(changed)), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
		}
	}
	c := &s.r.hvCLI
	if !s.useCLI || c.err != nil {
		return
	}
	s.r.dropped(bkDrop(s.images...))
	run, rep, err := s.cli(ctx, s.repo, false)
	if err != nil {
		c.err = fmt.Errorf("incremental backup (%d%%): %w", pct, err)
		harness.Logf("hv CLI: %v", c.err)
		return
	}
	s.ref = rep.Reference
	c.incr[pct] = append(c.incr[pct], run)
	harness.Logf("hv CLI incremental round %d, %d%%: %s, %s read, %s", round, pct, stats.Ms(run.d), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// bkCLIReport is the part of `hv backup create -o json` the benchmark reads.
type bkCLIReport struct {
	ID                string `json:"id"`
	Kind              string `json:"kind"`
	Consistency       string `json:"consistency"`
	ConsistencyReason string `json:"consistency_reason"`
	Reference         string `json:"reference"`
	Finished          bool   `json:"finished"`
	// ChangedBytes: the blocks read from the VM's disks (all the data of a disk
	// read whole).
	ChangedBytes int64 `json:"changed_bytes"`
	StoredBytes  int64 `json:"stored_bytes"`
	Disks        []struct {
		Name       string `json:"name"`
		Full       bool   `json:"full"`
		FullReason string `json:"full_reason"`
	} `json:"disks"`
}

// bkAPIBackup opens a backup through hvd's API (full when since is ""), reads
// what it says to read over NBD (the disk's data extents, or the changed ones) and
// discards it, then finishes the backup (finish) or aborts it. t0 is just before the
// request, t1 when the finish or abort answered.
func bkAPIBackup(ctx context.Context, c *client.Client, vm, since string, finish bool) (bkRun, api.Backup, error) {
	var run bkRun
	var b api.Backup
	req := api.BackupCreate{}
	if since != "" {
		req.Since = &since
	}
	t0 := time.Now()
	op, err := c.CreateBackup(ctx, vm, req)
	if err != nil {
		return run, b, err
	}
	if op, err = c.WaitOperation(ctx, op.ID, nil); err != nil {
		return run, b, err
	}
	if err := client.DecodeResult(op, &b); err != nil {
		return run, b, err
	}
	run.open = time.Since(t0)
	ended := false
	defer func() {
		if !ended {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = c.AbortBackup(actx, vm, b.ID)
		}
	}()
	rctx, cancel := context.WithTimeout(ctx, bkOpLimit)
	defer cancel()
	for _, d := range b.Disks {
		n, err := bkReadExport(rctx, d)
		if err != nil {
			return run, b, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		run.bytes += n
	}
	ended = true
	if finish {
		_, err = c.FinishBackup(ctx, vm, b.ID)
	} else {
		err = c.AbortBackup(ctx, vm, b.ID)
	}
	if err != nil {
		return run, b, err
	}
	run.d = time.Since(t0)
	return run, b, nil
}

// bkReadExport reads a backup disk's extents that need reading (base:allocation
// data, or the dirty bitmap's changed extents when incremental) with up to
// bkReaders connections, bkReadSize bytes a request, and returns the bytes read.
func bkReadExport(ctx context.Context, d api.BackupDisk) (int64, error) {
	mc, mask, want := nbd.BaseAllocation, uint32(nbd.StateZero), uint32(0)
	if d.Incremental {
		mc, mask, want = d.DirtyBitmap, nbd.StateDirty, nbd.StateDirty
	}
	opts := nbd.Options{Export: d.Export, MetaContexts: []string{mc}}
	c0, err := nbd.Dial(ctx, "unix", d.Socket, opts)
	if err != nil {
		return 0, err
	}
	defer c0.Close()
	exts, err := c0.Extents(ctx, mc)
	if err != nil {
		return 0, err
	}
	type piece struct{ off, n int64 }
	var pieces []piece
	for _, x := range nbd.Select(exts, mask, want) {
		for off := x.Offset; off < x.End(); off += bkReadSize {
			pieces = append(pieces, piece{off, min(bkReadSize, x.End()-off)})
		}
	}
	workers := 1
	if c0.Export().Flags.CanMultiConn() {
		workers = bkReaders
	}
	clients := []*nbd.Client{c0}
	for len(clients) < workers {
		c, err := nbd.Dial(ctx, "unix", d.Socket, nbd.Options{Export: d.Export})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		clients = append(clients, c)
	}
	jobs := make(chan piece)
	var mu sync.Mutex
	var total int64
	var firstErr error
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bkReadSize)
			for p := range jobs {
				err := c.ReadInto(ctx, buf[:p.n], p.off)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					total += p.n
				}
				mu.Unlock()
			}
		}()
	}
	for _, p := range pieces {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			break
		}
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	return total, firstErr
}
