package host

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/store"
	"github.com/hvproject/hv/internal/vmconfig"
)

// vm is one VM known to the service.
type vm struct {
	name        string
	s           *Service     // the host that holds it
	store       store.Store  // where its records live
	dirMu       sync.RWMutex // guards dir, which a storage move changes
	dir         string       // LOCATION/NAME (Dir)
	run         string       // Root/run/ID: sockets and pid file
	placeholder bool         // a name reserved while the VM is being created

	// lock serializes lifecycle operations on this VM. It is a channel so that a
	// waiting caller can give up when its context ends.
	lock chan struct{}

	// cfgMu serializes changes of the configuration: each is a read, a
	// change and a durable write as one step (updateConfig), so that two
	// changes never undo each other, whatever else holds the VM.
	cfgMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	cfg    vmconfig.Config
	cfgVer int
	rt     vmconfig.Runtime
	sess   *session // the running QEMU, nil when none
	busyOp string   // kind of the operation holding lock, for messages
	busyID string
	cancel context.CancelFunc // cancels the operation holding lock
	// unsaved is why the state in rt is not on disk yet (a full disk): a
	// fact hv had to record in memory anyway (QEMU exited), written later
	// by persistLoop. nil when runtime.json matches rt.
	unsaved error

	g           *guest.Guest      // integration services; set once, lives as long as the VM
	diskSizes   map[string]uint64 // virtual size per disk file, read by qemu-img
	diskSizesAt time.Time
}

func newVM(name, dir, runRoot string, cfg vmconfig.Config) *vm {
	return &vm{name: name, dir: dir, run: filepath.Join(runRoot, cfg.ID), cfg: cfg,
		lock: make(chan struct{}, 1), rt: vmconfig.Runtime{State: api.StateOff}}
}

// What the VM's integration services read of it (guest.VM).

func (v *vm) Name() string { return v.name }

func (v *vm) Running() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rt.State == api.StateRunning
}

func (v *vm) Enabled(service string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg.ServiceEnabled(service)
}

func (v *vm) KVP() map[string]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.cfg.KVP)
}

func (v *vm) path(rel string) string { return filepath.Join(v.Dir(), rel) }

// Files in a VM's directory and its run directory.
const (
	fileSave    = "state.save"   // memory and device state of a saved VM
	fileNVRAM   = "nvram.fd"     // Gen 2 UEFI variables
	fileQEMULog = "qemu.log"     // QEMU's own messages
	fileConsole = "console.log"  // everything the serial console printed
	sockQMP     = "qmp.sock"     // in the run directory
	sockAgent   = "agent.sock"   //
	sockConsole = "console.sock" //
	filePID     = "qemu.pid"     //
)

func (v *vm) runPath(name string) string { return filepath.Join(v.run, name) }

// sessionSock is the host side of interactive session port i.
func sessionSock(i int) string { return "session" + strconv.Itoa(i) + ".sock" }

// acquire takes the VM's lifecycle lock for an operation, or fails at once with a
// conflict naming the operation in the way.
func (v *vm) acquire(kind, opID string, cancel context.CancelFunc) error {
	select {
	case v.lock <- struct{}{}:
		v.mu.Lock()
		v.busyOp, v.busyID, v.cancel = kind, opID, cancel
		v.mu.Unlock()
		return nil
	default:
		v.mu.Lock()
		defer v.mu.Unlock()
		return errdefs.WithHint(fmt.Errorf("VM %s is busy with %s (operation %s): %w", v.name, v.busyOp, v.busyID, errdefs.ErrConflict),
			"wait for operation "+v.busyID+" to end, or cancel it")
	}
}

// acquireWait takes the lock, waiting for the holder to finish (used by kill after
// it canceled the holder).
func (v *vm) acquireWait(ctx context.Context, kind, opID string, cancel context.CancelFunc) error {
	select {
	case v.lock <- struct{}{}:
		v.mu.Lock()
		v.busyOp, v.busyID, v.cancel = kind, opID, cancel
		v.mu.Unlock()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for VM %s's current operation to end: %w", v.name, errdefs.ErrTimeout)
	}
}

func (v *vm) release() {
	v.mu.Lock()
	v.busyOp, v.busyID, v.cancel = "", "", nil
	v.mu.Unlock()
	<-v.lock
}

func (v *vm) snapshotState() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rt.State
}

// setStateLocked records a new state durably, or not at all: on an error
// nothing changed, and the operation that asked undoes its step (call with
// v.mu held).
func (v *vm) setStateLocked(state, reason string) error {
	rt := v.nextRuntime(state, reason)
	if err := v.store.SaveRuntime(v.Dir(), rt); err != nil {
		return err
	}
	v.rt, v.unsaved = rt, nil
	v.stateChanged()
	return nil
}

// setFactLocked records a state that is a fact already (QEMU exited, was
// killed, the guest powered off): memory follows at once, whatever the disk
// says, so the VM is never shown Running with no QEMU. If runtime.json cannot
// be written (a full disk), the error is returned for the log, kept in
// unsaved for the VM's state reason, and persistLoop writes it later; a
// restart of hvd meanwhile finds QEMU gone and comes to the same state.
func (v *vm) setFactLocked(state, reason string) error {
	v.rt = v.nextRuntime(state, reason)
	v.unsaved = v.store.SaveRuntime(v.Dir(), v.rt)
	v.stateChanged()
	return v.unsaved
}

func (v *vm) nextRuntime(state, reason string) vmconfig.Runtime {
	rt := v.rt
	if state != rt.State && isTransitional(state) {
		rt.PrevState = rt.State
	}
	rt.State, rt.Reason = state, reason
	return rt
}

func (v *vm) stateChanged() {
	if s := v.rt.State; s != api.StateRunning && s != api.StatePaused && s != api.StatePausedCritical && s != api.StateStopping && s != api.StateSaving && v.g != nil {
		v.g.LostQEMU()
	}
}

func isTransitional(s string) bool {
	return s == api.StateStarting || s == api.StateStopping || s == api.StateSaving
}

func (v *vm) uptimeLocked() time.Duration {
	switch v.rt.State {
	case api.StateRunning, api.StatePaused, api.StatePausedCritical, api.StateStopping, api.StateSaving:
		if !v.rt.StartedAt.IsZero() {
			return v.rt.UptimeBefore + time.Since(v.rt.StartedAt)
		}
	case api.StateSaved:
		return v.rt.UptimeBefore
	}
	return 0
}

func (v *vm) toAPI(accel string) api.VM {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.cfg
	out := c.View(v.Dir())
	out.State, out.StateReason, out.ConfigVersion = v.rt.State, v.rt.Reason, v.cfgVer
	if loc, ok := v.s.location(v); ok {
		out.Storage = loc.Name
	}
	out.Accelerator, out.UptimeSeconds, out.Guest = accel, v.uptimeLocked().Seconds(), v.g.Facts()
	hb, last := v.g.Heartbeat()
	out.Heartbeat = hb
	if !last.IsZero() {
		out.LastHeartbeat = &last
	}
	if since := v.rt.CriticalSince; !since.IsZero() {
		out.CriticalSince = &since
	}
	if !c.ServiceEnabled(api.ServiceHeartbeat) {
		out.Heartbeat = api.HeartbeatDisabled
	}
	if v.sess != nil {
		out.PID = v.sess.Pid()
		for i, n := range c.NICs {
			out.NICs[i].Tap = netdev.TapName(c.ID, n.Name)
		}
	}
	if v.rt.Accel != "" && (v.sess != nil || v.rt.State == api.StateSaved) {
		out.Accelerator = v.rt.Accel // what it started with, whatever the host would give it now
	}
	if v.unsaved != nil {
		out.StateReason = strings.TrimPrefix(out.StateReason+"; ", "; ") + "hvd could not record this state on disk yet (" +
			errdefs.Message(v.unsaved) + "); free space under " + filepath.Dir(filepath.Dir(v.Dir())) + " and hvd records it within seconds"
	}
	return out
}
