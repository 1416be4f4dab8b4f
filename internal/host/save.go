package host

import (
	"context"
	"os"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/operation"
)

// doSave writes the VM's memory and device state to a file in its directory and
// ends QEMU (Hyper-V's Save). The file is complete and synced before the state
// says Saved; until then the VM can go back to running.
func (s *Service) doSave(ctx context.Context, op *operation.Op, v *vm) (err error) {
	ss, err := v.session()
	if err != nil {
		return err
	}
	v.mu.Lock()
	wasPaused := v.rt.State == api.StatePaused
	prev := v.rt.State
	err = v.setStateLocked(api.StateSaving, "")
	v.mu.Unlock()
	if err != nil {
		return err
	}
	s.publishVM(v, "state-changed", "")
	part := v.path(fileSave + ".part")
	defer func() {
		if err == nil {
			return
		}
		// Undo: the VM goes on as it was; no partial state file stays behind.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ss.CancelSave(cctx)
		if !wasPaused {
			_ = ss.Cont(cctx)
		}
		_ = os.Remove(part)
		_ = s.setState(v, prev, "save failed: "+err.Error())
	}()

	// A saved state restores only on the machine type it was taken on,
	// which a newer QEMU (here after an upgrade, or on another host) must
	// be told by its versioned name.
	machineType, err := ss.MachineType(ctx)
	if err != nil {
		return errWrap(err, "reading VM %s's machine type before the save", v.name)
	}
	if !wasPaused {
		if err := ss.Pause(ctx); err != nil {
			return errWrap(err, "pausing VM %s before the save", v.name)
		}
	}
	if err := ss.SaveState(ctx, part, saveProgress(op, "saving memory")); err != nil {
		return errWrap(err, "saving VM %s's memory", v.name)
	}
	s.hook("save:written")
	if err := fsutil.SyncFile(part); err != nil {
		return err
	}
	if err := os.Rename(part, v.path(fileSave)); err != nil {
		return err
	}
	if err := fsutil.SyncDir(v.Dir()); err != nil {
		return err
	}
	ss.ExpectExit(true)
	v.mu.Lock()
	v.rt.UptimeBefore = v.uptimeLocked()
	v.rt.SavedPaused = wasPaused
	v.rt.MachineType = machineType
	v.rt.PID = 0
	err = v.setStateLocked(api.StateSaved, "")
	v.mu.Unlock()
	if err != nil {
		_ = os.Rename(v.path(fileSave), part)
		return err
	}
	// From here the saved file is the VM; QEMU only has to go.
	ss.Quit()
	<-ss.exited
	_ = os.Remove(v.runPath(filePID))
	s.publishVM(v, "state-changed", "saved")
	return nil
}

// saveProgress reports a memory save's progress as the operation's stage.
func saveProgress(op *operation.Op, stage string) func(done, total uint64) {
	if op == nil {
		return nil
	}
	op.SetProgress(stage, 0, 0, "bytes")
	return func(done, total uint64) { op.SetProgress(stage, done, total, "bytes") }
}
