package vmconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/internal/fsutil"
)

// RuntimeFileName holds what hvd must know to find a VM again after a restart.
const RuntimeFileName = "runtime.json"

// Runtime is the durable part of a VM's running state. It is written before each
// step that a crash could interrupt, so a restarted hvd knows what was under way.
type Runtime struct {
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// PrevState is the state a transitional state (Starting, Saving...) came from,
	// so recovery can put the VM back where it was.
	PrevState string    `json:"prev_state,omitempty"`
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"started_at,omitempty"`
	// UptimeBefore is the running time accumulated before a save, so uptime goes
	// on across save and start as the guest's own clock does.
	UptimeBefore time.Duration `json:"uptime_before,omitempty"`
	// SavedPaused: the VM was paused when it was saved; start leaves it paused.
	SavedPaused bool      `json:"saved_paused,omitempty"`
	ChangedAt   time.Time `json:"changed_at"`
	// BootMemoryBytes and MaxMemoryBytes are the memory layout QEMU was started
	// with; a restore must use the same, whatever the configuration says now.
	BootMemoryBytes uint64 `json:"boot_memory_bytes,omitempty"`
	MaxMemoryBytes  uint64 `json:"max_memory_bytes,omitempty"`
	HotplugPorts    int    `json:"hotplug_ports,omitempty"`
	// Accel and CPUModel are what QEMU was started with; a saved memory state
	// restores only under the same.
	Accel    string `json:"accel,omitempty"`
	CPUModel string `json:"cpu_model,omitempty"`
	// MachineType is the versioned machine type QEMU runs when it is not
	// QEMU's newest: a VM that arrived live from another host keeps the
	// source's until it is turned off.
	MachineType string `json:"machine_type,omitempty"`
	// ThawBy is set while hv holds the guest's file systems frozen: a restarted
	// hvd thaws it by then (the guard process cannot reach the agent while hvd
	// holds its socket). GuardPID is that guard, to end it after the thaw.
	ThawBy   time.Time `json:"thaw_by,omitempty"`
	GuardPID int       `json:"guard_pid,omitempty"`
	// CriticalSince is when a host I/O error first paused the VM
	// (PausedCritical), until hvd sees its storage answer again: the
	// critical error timeout counts from it, across restarts of hvd.
	CriticalSince time.Time `json:"critical_since,omitempty"`
}

// LoadRuntime reads the runtime file in dir; a missing file means Off. A
// symbolic link there is refused, not followed (it names a PID hvd signals).
func LoadRuntime(dir string) (Runtime, error) {
	data, err := fsutil.ReadFileNoFollow(filepath.Join(dir, RuntimeFileName))
	if errors.Is(err, os.ErrNotExist) {
		return Runtime{State: "Off"}, nil
	}
	if err != nil {
		return Runtime{}, err
	}
	var r Runtime
	if err := json.Unmarshal(data, &r); err != nil {
		return Runtime{State: "Off", Reason: "runtime file was damaged; treated as Off"}, nil
	}
	return r, nil
}

// SaveRuntime writes r into dir atomically and durably.
func SaveRuntime(dir string, r Runtime) error {
	r.ChangedAt = time.Now().UTC()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, RuntimeFileName), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("recording VM state: %w", err)
	}
	return nil
}
