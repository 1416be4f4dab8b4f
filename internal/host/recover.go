package host

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qemu"
)

// recoverAll finds every VM in Root/vms after a start of hvd: it removes what a
// crash left half made, re-attaches to QEMUs that still run and records why the
// others are off. Nothing that was acknowledged is lost.
func (s *Service) recoverAll(ctx context.Context) error {
	entries, err := os.ReadDir(s.vmsDir)
	if err != nil {
		return err
	}
	s.incoming.RecoverStaging()
	for _, e := range entries {
		dir := filepath.Join(s.vmsDir, e.Name())
		if strings.HasPrefix(e.Name(), creatingPrefix) || strings.HasPrefix(e.Name(), deletingPrefix) {
			s.log.Info("removing a VM directory left half made or half deleted by a crash", "dir", dir)
			if err := os.RemoveAll(dir); err != nil {
				s.log.Warn("cannot remove leftover directory", "dir", dir, "err", err)
			}
			continue
		}
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		cfg, ver, err := s.store.LoadConfig(dir)
		if err != nil {
			s.log.Error("skipping a VM whose configuration cannot be read", "dir", dir, "err", err)
			continue
		}
		rt, err := s.store.LoadRuntime(dir)
		if err != nil {
			s.log.Error("skipping a VM whose runtime file cannot be read", "dir", dir, "err", err)
			continue
		}
		v := s.newVM(cfg.Name, dir, cfg)
		v.cfgVer, v.rt = ver, rt
		s.recoverVM(ctx, v)
		if s.incoming.Recover(ctx, v) {
			continue // it was arriving, uncommitted: gone
		}
		s.ckpts.Recover(ctx, v)
		s.backups.Recover(ctx, v)
		s.vms[v.name] = v
		if _, err := s.moves.Recover(ctx, v); err != nil {
			s.log.Error("settling a move that hvd's stop cut short", "vm", v.name, "err", err)
		}
	}
	return nil
}

func (s *Service) recoverVM(ctx context.Context, v *vm) {
	pid := v.rt.PID
	if pid == 0 {
		pid = readPID(v.runPath(filePID))
	}
	alive := pid > 0 && qemu.Alive(pid, v.cfg.ID)
	off := func(reason string) {
		if alive {
			_ = qemu.Kill(pid, v.cfg.ID)
			machine.WaitGone(pid, v.cfg.ID, 10*time.Second)
		}
		s.stopNICs(v.cfg)
		v.rt.PID = 0
		if err := v.setFactLocked(api.StateOff, reason); err != nil {
			s.log.Error("recording VM state", "vm", v.name, "err", err)
		}
		_ = cleanRun(v)
		s.log.Info("VM is off after recovery", "vm", v.name, "reason", reason)
	}
	switch v.rt.State {
	case api.StateOff:
		if alive {
			off(v.rt.Reason)
		}
		s.stopNICs(v.cfg) // taps left by a crash
		return
	case api.StateSaved:
		if alive {
			_ = qemu.Kill(pid, v.cfg.ID)
			machine.WaitGone(pid, v.cfg.ID, 10*time.Second)
		}
		if _, err := os.Stat(v.path(fileSave)); err != nil {
			off("the saved state file is missing")
		}
		_ = os.Remove(v.path(fileSave + ".part"))
		return
	case api.StateStarting:
		prev := v.rt.PrevState
		if prev == api.StateSaved {
			if _, err := os.Stat(v.path(fileSave)); err == nil {
				if alive {
					_ = qemu.Kill(pid, v.cfg.ID)
					machine.WaitGone(pid, v.cfg.ID, 10*time.Second)
				}
				v.rt.PID = 0
				_ = v.setStateLocked(api.StateSaved, "hvd stopped while the VM was starting; start it again")
				_ = cleanRun(v)
				return
			}
		}
		off("hvd stopped while the VM was starting; start it again")
		return
	}
	// Running, Paused, Stopping, Saving, PausedCritical: is QEMU still there?
	if !alive {
		off("QEMU exited while hvd was not running" + machine.LastWords(v.path(fileQEMULog)))
		return
	}
	m, err := machine.Attach(ctx, s.machineOptions(v), pid)
	if err != nil {
		off("could not re-attach to QEMU: " + err.Error())
		return
	}
	st, err := m.Status(ctx)
	if err != nil {
		m.Detach()
		off("could not read QEMU's state: " + err.Error())
		return
	}
	ss := s.attach(v, m)
	v.sess = ss
	v.rt.PID = pid
	if v.rt.State == api.StateSaving {
		// The save did not finish: the VM goes on as it was; its partial file goes.
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = ss.CancelSave(qctx)
		if v.rt.PrevState == api.StateRunning {
			_ = ss.Cont(qctx)
			st.Status, st.Running = "running", true
		}
		cancel()
		_ = os.Remove(v.path(fileSave + ".part"))
	}
	state := api.StatePaused
	if st.Running {
		state = api.StateRunning
	}
	switch st.Status {
	case "running", "paused", "postmigrate", "suspended":
	case "io-error":
		state = api.StatePausedCritical
	default:
		ss.detach()
		off("QEMU was in state " + st.Status + " when hvd started")
		return
	}
	if err := v.setStateLocked(state, v.rt.Reason); err != nil {
		s.log.Error("recording VM state", "vm", v.name, "err", err)
	}
	s.log.Info("re-attached to a running VM", "vm", v.name, "pid", pid, "state", state)
	v.g.ResumeFreeze(v.rt.ThawBy, v.rt.GuardPID)
}

func readPID(path string) int {
	data, err := fsutil.ReadFileNoFollow(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}
