package machine

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
)

// Pause stops the guest's CPUs.
func (m *Machine) Pause(ctx context.Context) error { return qmp.Do(ctx, m.qmp, qmp.Stop{}) }

// Cont lets the guest's CPUs run.
func (m *Machine) Cont(ctx context.Context) error { return qmp.Do(ctx, m.qmp, qmp.Cont{}) }

// PowerButton presses the ACPI power button.
func (m *Machine) PowerButton(ctx context.Context) error {
	return qmp.Do(ctx, m.qmp, qmp.SystemPowerdown{})
}

// Status is QEMU's run state.
func (m *Machine) Status(ctx context.Context) (qmp.StatusInfo, error) { return m.qmp.Status(ctx) }

// Quit ends QEMU cleanly and waits until it is gone, killing it when it does
// not go within 15 s.
func (m *Machine) Quit() {
	m.ExpectExit(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = qmp.Do(ctx, m.qmp, qmp.Quit{})
	cancel()
	select {
	case <-m.exited:
	case <-time.After(15 * time.Second):
		_ = m.Kill()
	}
}

// WaitIncoming waits until QEMU has loaded an incoming state (it leaves "inmigrate").
func (m *Machine) WaitIncoming(ctx context.Context) error {
	for {
		st, err := m.qmp.Status(ctx)
		if err != nil {
			return err
		}
		switch st.Status {
		case "inmigrate":
		case "paused", "prelaunch", "running":
			return nil
		default:
			return fmt.Errorf("QEMU ended the restore in state %q (see qemu.log in the VM's directory): %w", st.Status, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.qmp.Done():
			return fmt.Errorf("QEMU exited while restoring the saved state%s: %w", LastWords(m.o.LogPath), errdefs.ErrUnavailable)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Flush makes QEMU write every image's cached data and metadata to disk:
// "stop" drains and flushes all block nodes (also on a paused VM), and a
// running VM goes on at once.
func (m *Machine) Flush(ctx context.Context) error {
	st, err := m.qmp.Status(ctx)
	if err != nil {
		return fmt.Errorf("reading QEMU's state before a flush: %w", err)
	}
	if err := m.Pause(ctx); err != nil {
		return fmt.Errorf("flushing the disks: %w", err)
	}
	if st.Running {
		if err := m.Cont(ctx); err != nil {
			return fmt.Errorf("resuming after flushing the disks: %w", err)
		}
	}
	return nil
}

// SaveState writes a paused guest's memory and device state into path through
// a descriptor handed to QEMU; the caller syncs the file. QEMU stays in
// "postmigrate": the caller either ends it or lets it run on with Cont.
// progress, if not nil, is told the bytes written so far and the total.
func (m *Machine) SaveState(ctx context.Context, path string, progress func(done, total uint64)) error {
	// A QEMU that arrived by live migration (or whose move failed) keeps that
	// migration's capabilities: with pause-before-switchover still on, a save
	// would stop at "pre-switchover" and wait for ever. A save sets its own.
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateSetCapabilities{Capabilities: saveCapabilities()}); err != nil {
		return fmt.Errorf("setting the save's capabilities: %w", err)
	}
	// QEMU caps migration at 128 MiB/s by default; a save is bounded by the disk only.
	unlimited := uint64(1) << 40
	off := ""
	if err := qmp.Do(ctx, m.qmp, qmp.MigrateSetParameters{MaxBandwidth: &unlimited, TLSCreds: &off}); err != nil {
		return fmt.Errorf("setting the save bandwidth: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("creating the state file: %v: %w", err, errdefs.ErrUnavailable)
	}
	err = qmp.Do(ctx, m.qmp, qmp.GetFD{Name: "hv-save", File: f})
	f.Close()
	if err != nil {
		return fmt.Errorf("handing the state file to QEMU: %w", err)
	}
	if err := qmp.Do(ctx, m.qmp, qmp.Migrate{URI: "fd:hv-save"}); err != nil {
		return err
	}
	for {
		st, err := qmp.Run(ctx, m.qmp, qmp.QueryMigrate{})
		if err != nil {
			return fmt.Errorf("watching the save: %w", err)
		}
		if st.RAM != nil && progress != nil {
			progress(st.RAM.Transferred, st.RAM.Total)
		}
		switch st.Status {
		case qmp.MigrationCompleted:
			return m.waitMigrationFinalized(ctx)
		case qmp.MigrationFailed, qmp.MigrationCancelled:
			return fmt.Errorf("QEMU could not write the state: %s (is the disk full?): %w", st.ErrorDesc, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitMigrationFinalized waits for QEMU to leave "finish-migrate" once a
// migration says "completed": the migration thread sets the run state a
// moment later, and a cont in between is refused ("Migration is not
// finalized yet"), which left a checkpointed guest paused.
func (m *Machine) waitMigrationFinalized(ctx context.Context) error {
	wait := time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := m.qmp.Status(ctx)
		if err != nil {
			return fmt.Errorf("reading QEMU's state after the migration: %w", err)
		}
		if st.Status != "finish-migrate" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("QEMU still finishes the migration after 10 s: %w", errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// CancelSave stops a save under way (migrate_cancel).
func (m *Machine) CancelSave(ctx context.Context) error {
	return qmp.Do(ctx, m.qmp, qmp.MigrateCancel{})
}
