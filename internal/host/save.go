package host

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/operation"
)

// migrateStatus is the part of query-migrate that save and restore read.
type migrateStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	RAM       *struct {
		Transferred uint64 `json:"transferred"`
		Total       uint64 `json:"total"`
		Remaining   uint64 `json:"remaining"`
	} `json:"ram"`
}

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
		_ = ss.qmp.Execute(cctx, "migrate_cancel", nil, nil)
		if !wasPaused {
			_ = ss.qmp.Execute(cctx, "cont", nil, nil)
		}
		_ = os.Remove(part)
		_ = s.setState(v, prev, "save failed: "+err.Error())
	}()

	if !wasPaused {
		if err := ss.qmp.Execute(ctx, "stop", nil, nil); err != nil {
			return errWrap(err, "pausing VM %s before the save", v.name)
		}
	}
	if err := migrateToFile(ctx, op, ss, part, "saving memory", v.cfg.MemoryBytes); err != nil {
		return errWrap(err, "saving VM %s's memory", v.name)
	}
	s.hook("save:written")
	if err := fsutil.SyncFile(part); err != nil {
		return err
	}
	if err := os.Rename(part, v.path(fileSave)); err != nil {
		return err
	}
	if err := fsutil.SyncDir(v.dir); err != nil {
		return err
	}
	ss.mu.Lock()
	ss.expectExit = true
	ss.mu.Unlock()
	v.mu.Lock()
	v.rt.UptimeBefore = v.uptimeLocked()
	v.rt.SavedPaused = wasPaused
	v.rt.PID = 0
	err = v.setStateLocked(api.StateSaved, "")
	v.mu.Unlock()
	if err != nil {
		_ = os.Rename(v.path(fileSave), part)
		return err
	}
	// From here the saved file is the VM; QEMU only has to go.
	qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = ss.qmp.Execute(qctx, "quit", nil, nil)
	cancel()
	select {
	case <-ss.exited:
	case <-time.After(15 * time.Second):
		_ = killAndWait(ss)
	}
	_ = os.Remove(v.runPath(filePID))
	s.publishVM(v, "state-changed", "saved")
	return nil
}

// migrateToFile writes a stopped VM's memory and device state into path
// through a descriptor handed to QEMU; the caller syncs it. QEMU stays in
// "postmigrate": the caller either ends it or lets it run on with cont.
func migrateToFile(ctx context.Context, op *operation.Op, ss *session, path, stage string, total uint64) error {
	// QEMU caps migration at 128 MiB/s by default; a save is bounded by the disk only.
	if err := ss.qmp.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return errWrap(err, "setting the save bandwidth")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating the state file: %v: %w", err, errdefs.ErrUnavailable)
	}
	err = ss.qmp.ExecuteWithFD(ctx, "getfd", map[string]any{"fdname": "hv-save"}, f, nil)
	f.Close()
	if err != nil {
		return errWrap(err, "handing the state file to QEMU")
	}
	if err := ss.qmp.Execute(ctx, "migrate", map[string]any{"uri": "fd:hv-save"}, nil); err != nil {
		return err
	}
	if op != nil {
		op.SetProgress(stage, 0, total, "bytes")
	}
	for {
		var st migrateStatus
		if err := ss.qmp.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return errWrap(err, "watching the save")
		}
		if st.RAM != nil && op != nil {
			op.SetProgress(stage, st.RAM.Transferred, st.RAM.Total, "bytes")
		}
		if st.Status == "completed" {
			break
		}
		if st.Status == "failed" || st.Status == "cancelled" {
			return fmt.Errorf("QEMU could not write the state: %s (is the disk full?): %w", st.ErrorDesc, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
