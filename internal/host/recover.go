package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
)

// recoverAll finds every VM in the storage locations after a start of hvd:
// it removes what a crash left half made, re-attaches to QEMUs that still
// run and records why the others are off. Nothing that was acknowledged is
// lost.
func (s *Service) recoverAll(ctx context.Context) error {
	s.incoming.RecoverStaging()
	var moving []string // directories a storage move left behind its source
	for _, loc := range s.locs.All() {
		entries, err := os.ReadDir(loc.Dir)
		if err != nil {
			return fmt.Errorf("storage location %s: %w", loc.Name, err)
		}
		for _, e := range entries {
			dir := filepath.Join(loc.Dir, e.Name())
			switch {
			case strings.HasPrefix(e.Name(), creatingPrefix) || strings.HasPrefix(e.Name(), deletingPrefix):
				s.log.Info("removing a VM directory left half made or half deleted by a crash", "dir", dir)
				if err := os.RemoveAll(dir); err != nil {
					s.log.Warn("cannot remove leftover directory", "dir", dir, "err", err)
				}
			case strings.HasPrefix(e.Name(), movingPrefix):
				moving = append(moving, dir)
			case e.IsDir() && !strings.HasPrefix(e.Name(), "."):
				s.recoverDir(ctx, dir)
			}
		}
	}
	for _, dir := range moving {
		s.settleStorageMove(ctx, dir)
	}
	return nil
}

// recoverDir finds the VM in dir again.
func (s *Service) recoverDir(ctx context.Context, dir string) {
	cfg, ver, err := s.store.LoadConfig(dir)
	if err != nil {
		s.log.Error("skipping a VM whose configuration cannot be read", "dir", dir, "err", err)
		return
	}
	rt, err := s.store.LoadRuntime(dir)
	if err != nil {
		s.log.Error("skipping a VM whose runtime file cannot be read", "dir", dir, "err", err)
		return
	}
	if o, dup := s.vms[cfg.Name]; dup {
		s.log.Error("skipping a second VM of the same name; move or remove one of the two directories", "vm", cfg.Name,
			"dir", dir, "first", o.Dir())
		return
	}
	v := s.newVM(cfg.Name, dir, cfg)
	v.cfgVer, v.rt = ver, rt
	s.recoverVM(ctx, v)
	if s.incoming.Recover(ctx, v) {
		return // it was arriving, uncommitted: gone
	}
	s.ckpts.Recover(ctx, v)
	s.backups.Recover(ctx, v)
	s.vms[v.name] = v
	if _, err := s.moves.Recover(ctx, v); err != nil {
		s.log.Error("settling a move that hvd's stop cut short", "vm", v.name, "err", err)
	}
}

// recovering is one VM found again after a start of hvd, with the QEMU
// its records name, if that still runs.
type recovering struct {
	s     *Service
	v     *vm
	pid   int
	alive bool
}

// recoverVM brings v's state in line with what is left of its QEMU.
func (s *Service) recoverVM(ctx context.Context, v *vm) {
	pid := v.rt.PID
	if pid == 0 {
		pid = readPID(v.runPath(filePID))
	}
	r := &recovering{s: s, v: v, pid: pid, alive: pid > 0 && qemu.Alive(pid, v.cfg.ID)}
	switch v.rt.State {
	case api.StateOff:
		if r.alive {
			r.off(v.rt.Reason)
		}
		s.devs.StopNICs(v.cfg) // taps left by a crash
	case api.StateSaved:
		r.kill()
		if _, err := os.Stat(v.path(fileSave)); err != nil {
			r.off("the saved state file is missing")
		}
		_ = os.Remove(v.path(fileSave + ".part"))
	case api.StateStarting:
		r.recoverStart()
	default: // Running, Paused, Stopping, Saving, PausedCritical
		r.reattach(ctx)
	}
}

// kill ends the VM's QEMU, if it still runs.
func (r *recovering) kill() {
	if r.alive {
		_ = qemu.Kill(r.pid, r.v.cfg.ID)
		machine.WaitGone(r.pid, r.v.cfg.ID, 10*time.Second)
	}
}

// off records the VM Off for reason, its QEMU gone.
func (r *recovering) off(reason string) {
	s, v := r.s, r.v
	r.kill()
	s.devs.StopNICs(v.cfg)
	v.rt.PID = 0
	if err := v.setFactLocked(api.StateOff, reason); err != nil {
		s.log.Error("recording VM state", "vm", v.name, "err", err)
	}
	_ = cleanRun(v)
	s.log.Info("VM is off after recovery", "vm", v.name, "reason", reason)
}

// recoverStart settles a start that hvd did not finish: a VM restoring
// its saved state keeps it; any other is off.
func (r *recovering) recoverStart() {
	v := r.v
	if v.rt.PrevState == api.StateSaved {
		if _, err := os.Stat(v.path(fileSave)); err == nil {
			r.kill()
			v.rt.PID = 0
			_ = v.setStateLocked(api.StateSaved, "hvd stopped while the VM was starting; start it again")
			_ = cleanRun(v)
			return
		}
	}
	r.off("hvd stopped while the VM was starting; start it again")
}

// reattach takes hold again of a QEMU that outlived hvd, and records the
// state QEMU is in.
func (r *recovering) reattach(ctx context.Context) {
	s, v := r.s, r.v
	if !r.alive {
		r.off("QEMU exited while hvd was not running" + machine.LastWords(v.path(fileQEMULog)))
		return
	}
	m, err := machine.Attach(ctx, s.machineOptions(v), r.pid)
	if err != nil {
		r.off("could not re-attach to QEMU: " + err.Error())
		return
	}
	st, err := m.Status(ctx)
	if err != nil {
		m.Detach()
		r.off("could not read QEMU's state: " + err.Error())
		return
	}
	ss := s.attach(v, m)
	v.sess = ss
	v.rt.PID = r.pid
	if v.rt.State == api.StateSaving {
		st = abandonSave(ctx, v, ss, st)
	}
	state := api.StatePaused
	if st.Running {
		state = api.StateRunning
	}
	switch st.Status {
	case "running", "paused", "postmigrate", "suspended":
	case "io-error":
		// The watch of its storage (attach) retries it, and the timeout
		// counts from when it first paused, if hvd recorded that.
		state = api.StatePausedCritical
		if v.rt.CriticalSince.IsZero() {
			v.rt.CriticalSince = time.Now().UTC()
		}
		if v.rt.State != api.StatePausedCritical {
			v.rt.Reason = "a disk's storage failed while hvd was not running"
		}
	default:
		ss.detach()
		r.off("QEMU was in state " + st.Status + " when hvd started")
		return
	}
	// A fact: memory follows QEMU even when the disk is full (persistLoop
	// writes it later), so the storage watch acts on the state QEMU is in.
	if err := v.setFactLocked(state, v.rt.Reason); err != nil {
		s.log.Error("recording VM state", "vm", v.name, "err", err)
	}
	s.log.Info("re-attached to a running VM", "vm", v.name, "pid", r.pid, "state", state)
	v.g.ResumeFreeze(v.rt.ThawBy, v.rt.GuardPID)
}

// abandonSave ends a save that did not finish: the VM goes on as it was;
// its partial file goes. It returns QEMU's status now.
func abandonSave(ctx context.Context, v *vm, ss *session, st qmp.StatusInfo) qmp.StatusInfo {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = ss.CancelSave(qctx)
	if v.rt.PrevState == api.StateRunning {
		_ = ss.Cont(qctx)
		st.Status, st.Running = "running", true
	}
	_ = os.Remove(v.path(fileSave + ".part"))
	return st
}

func readPID(path string) int {
	data, err := fsutil.ReadFileNoFollow(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}
