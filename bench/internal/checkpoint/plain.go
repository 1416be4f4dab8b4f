package checkpoint

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/plain"
	"github.com/hvproject/hv/bench/internal/rawagent"
	"github.com/hvproject/hv/bench/internal/rawqmp"
	"github.com/hvproject/hv/bench/internal/stats"
)

// plain side: the same steps by hand, raw QMP and raw guest agent.

func ckPlain(ctx context.Context, e *harness.Env, dir, image string) (s ckSide) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()
	fail := func(step string, err error) ckSide { sideFail(&s, "plain", step, err); return s }

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("setup", err)
	}
	base := filepath.Join(dir, "disk.qcow2")
	if err := harness.CopyFile(image, base); err != nil {
		return fail("disk copy", err)
	}
	p, err := plain.NewVM(ctx, dir, 2, base, ckMemMiB, ckCPUs)
	if err != nil {
		return fail("setup", err)
	}
	p.Accel, p.WithQMP = e.Host.Accel, true
	v, err := plain.StartAgentVM(ctx, e, cl, p, guest.AgentLimit)
	if err != nil {
		return fail("boot", err)
	}
	stopVM := v.Stop
	s.boot = v.Boot
	harness.Logf("plain VM: agent answered after %s", stats.Ms(s.boot))
	q, err := rawqmp.Dial(ctx, p.QMPSocket(), 10*time.Second)
	if err != nil {
		return fail("QMP", err)
	}
	t0 := time.Now()
	if st, err := v.Agent.Run(ctx, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	} else if st.ExitCode != 0 || st.Signal != 0 {
		errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
		return fail("fill the guest's RAM", fmt.Errorf("exit code %d, signal %d: %s", st.ExitCode, st.Signal, errOut))
	}
	s.fill = time.Since(t0)
	harness.Logf("plain: 1 GiB written into the guest's /dev/shm in %s", stats.Ms(s.fill))
	// As libvirt does for a save: no bandwidth limit on the migration stream.
	if err := q.Call(ctx, time.Minute, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return fail("migrate-set-parameters", err)
	}

	active := p.Overlay // the disk image QEMU writes to
	snapshot := func(name string) error {
		next := filepath.Join(dir, name+".qcow2")
		err := q.Call(ctx, ckOpLimit, "blockdev-snapshot-sync",
			map[string]any{"device": "d0", "snapshot-file": next, "format": "qcow2"}, nil)
		if err == nil {
			active = next
		}
		return err
	}
	for i := 1; i <= ckRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		var n int
		if err := v.Agent.Call(ctx, time.Minute, "guest-fsfreeze-freeze", nil, &n); err != nil {
			return fail("guest-fsfreeze-freeze", err)
		}
		frozenAt := time.Now()
		serr := snapshot(fmt.Sprintf("prod%d", i))
		terr := v.Agent.Call(ctx, time.Minute, "guest-fsfreeze-thaw", nil, nil)
		d, frozen := time.Since(t0), time.Since(frozenAt)
		if err := errors.Join(serr, terr); err != nil {
			return fail("freeze, snapshot, thaw", err)
		}
		if n == 0 {
			return fail("guest-fsfreeze-freeze", errors.New("froze no file system"))
		}
		s.prod, s.frozen = append(s.prod, d), append(s.frozen, frozen)
		harness.Logf("plain freeze + blockdev-snapshot-sync + thaw %d/%d: %s, frozen %s (%d file systems)", i, ckRuns, stats.Ms(d), stats.Ms(frozen), n)
	}
	var mem, memDisk string // the last memory checkpoint: its state file and disk
	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("std%d", i)
		if mem != "" {
			os.Remove(mem) // only the last one is applied
		}
		mem, memDisk = filepath.Join(dir, name+".mem"), active
		harness.Settle()
		run, d, size, err := plainMemoryCheckpoint(ctx, q, mem, func() error { return snapshot(name) })
		if err != nil {
			return fail("stop, migrate to file, snapshot, cont", err)
		}
		s.std, s.stdRunning, s.stdBytes = append(s.std, d), append(s.stdRunning, run), append(s.stdBytes, size)
		harness.Logf("plain stop + migrate to file + snapshot + cont %d/%d: running after %s, synced after %s, %s, %s",
			i, ckRuns, stats.Ms(run), stats.Ms(d), stats.MiB(uint64(size)), stats.MiBs(stats.Throughput(size, d)))
	}
	q.Close()

	// Apply the last memory checkpoint: kill QEMU, a new overlay on the disk as it was,
	// a new QEMU with -incoming defer, the state file through getfd + migrate-incoming,
	// until query-status says running (QEMU starts the guest by itself when the state
	// is in).
	p.Incoming = true
	for i := 1; i <= ckApplyRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		stopVM()
		p.Overlay = filepath.Join(dir, fmt.Sprintf("apply%d.qcow2", i))
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", memDisk, p.Overlay).CombinedOutput()
		if err != nil {
			return fail("apply: qemu-img create", fmt.Errorf("%v: %s", err, out))
		}
		p.Reset()
		pp, err := plain.StartQEMU(e, cl, p)
		if err != nil {
			return fail("apply: start QEMU", err)
		}
		stopVM = pp.Kill
		if err := plainIncoming(ctx, p, pp, mem); err != nil {
			return fail("apply", err)
		}
		d := time.Since(t0)
		s.applyStd = append(s.applyStd, d)
		harness.Logf("plain apply (kill, overlay, QEMU -incoming, state in) %d/%d: running after %s", i, ckApplyRuns, stats.Ms(d))
		if err := plainFilled(ctx, p); err != nil {
			return fail("apply", fmt.Errorf("the guest's RAM did not come back: %w", err))
		}
	}
	stopVM()
	return s
}

// plainMemoryCheckpoint is what libvirt does for an external snapshot with memory,
// written by hand: stop, migrate into a file (fd passed with getfd), the disk
// snapshot, cont; then fdatasync of the state file. It returns the time until cont
// answered, the time until the file was synced, and the file's size.
func plainMemoryCheckpoint(ctx context.Context, q *rawqmp.Client, path string, diskSnapshot func() error) (time.Duration, time.Duration, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	t0 := time.Now()
	if err := q.Call(ctx, time.Minute, "stop", nil, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.CallFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return 0, 0, 0, err
	}
	if err := q.Call(ctx, time.Minute, "migrate", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.WaitMigration(ctx, ckOpLimit); err != nil {
		return 0, 0, 0, err
	}
	if err := diskSnapshot(); err != nil {
		return 0, 0, 0, err
	}
	if err := q.Call(ctx, time.Minute, "cont", nil, nil); err != nil {
		return 0, 0, 0, err
	}
	running := time.Since(t0)
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return 0, 0, 0, err
	}
	done := time.Since(t0)
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	return running, done, fi.Size(), nil
}

// plainFilled runs ckFilledScript through the raw agent of the QEMU p runs.
func plainFilled(ctx context.Context, p *plain.VM) error {
	a, err := rawagent.Dial(ctx, p.AgentSocket(), 30*time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	st, err := a.Run(ctx, time.Minute, "/bin/sh", "-c", ckFilledScript)
	if err == nil && (st.ExitCode != 0 || st.Signal != 0) {
		err = fmt.Errorf("%s: exit code %d, signal %d", ckFilledScript, st.ExitCode, st.Signal)
	}
	return err
}

// plainIncoming connects to the new QEMU's QMP socket (retried until it is there),
// feeds it the state file and waits until the guest runs.
func plainIncoming(ctx context.Context, p *plain.VM, pp *plain.Proc, mem string) error {
	var q *rawqmp.Client
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if q, err = rawqmp.Dial(ctx, p.QMPSocket(), 5*time.Second); err == nil {
			break
		}
		select {
		case <-pp.Exited:
			return fmt.Errorf("QEMU exited: %s", harness.Tail(pp.LogPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("QMP: %w", err)
		}
		harness.Sleep(ctx, 5*time.Millisecond)
	}
	defer q.Close()
	f, err := os.Open(mem)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := q.CallFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return err
	}
	if err := q.Call(ctx, time.Minute, "migrate-incoming", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return err
	}
	// The state was saved from a stopped guest, so QEMU ends the incoming migration
	// paused (the source's run state travels with it) and needs cont.
	st, err := q.WaitStatusNot(ctx, "inmigrate", ckOpLimit)
	if err != nil {
		return fmt.Errorf("%w; %s", err, harness.Tail(pp.LogPath))
	}
	if st == "paused" {
		if err := q.Call(ctx, time.Minute, "cont", nil, nil); err != nil {
			return err
		}
	}
	if err := q.WaitStatus(ctx, "running", time.Minute); err != nil {
		return fmt.Errorf("%w; %s", err, harness.Tail(pp.LogPath))
	}
	return nil
}
