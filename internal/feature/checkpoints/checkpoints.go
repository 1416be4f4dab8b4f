// Package checkpoints is the checkpoint API: Hyper-V's production (the guest
// freezes its file systems; disks only; applied by a cold boot) and standard
// (disks plus memory and device state) checkpoints. Their disks are qcow2
// overlays kept by internal/checkpoint; this package carries its plans out on
// a running VM through the VM's block layer (hostvm.Block), and on a VM that
// is off with qemu-img through checkpoint.Offline. It sees VMs only through
// hostvm.
package checkpoints

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Service is the checkpoint API of one host (the httpapi Checkpoints role,
// export and import aside), and the checkpoint work the host itself needs:
// recovery at hvd's start, the disk chains a start opens, export's
// temporary checkpoint.
type Service struct {
	h       hostvm.Host
	tracker blockops.Tracker
}

// New returns the checkpoint API of host h.
func New(h hostvm.Host) *Service {
	return &Service{h: h, tracker: blockops.Tracker{Tool: h.Disk(), Log: h.Log()}}
}

// machineLayout is what a standard checkpoint's state file needs to be
// loaded again: QEMU must rebuild the machine exactly as it was.
type machineLayout struct {
	BootMemoryBytes uint64        `json:"boot_memory_bytes"`
	MaxMemoryBytes  uint64        `json:"max_memory_bytes,omitempty"`
	HotplugPorts    int           `json:"hotplug_ports,omitempty"`
	Uptime          time.Duration `json:"uptime"`
	Paused          bool          `json:"paused,omitempty"`
	Accel           string        `json:"accel,omitempty"`
	CPUModel        string        `json:"cpu_model,omitempty"`
}

// Request is a checkpoint to take, as the host carries it out.
type Request struct {
	Name          string // "" picks one from the time
	Type          string // api.CheckpointProduction, ProductionOnly or Standard
	FreezeTimeout int    // seconds; 0: the default
	NoMemory      bool   // a standard checkpoint without memory (export's crash-consistent fallback)
}

// wrap keeps the kind of err (for the HTTP code) while adding context.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}

// stage reports an operation's stage; recovery runs without an operation.
func stage(op *operation.Op, s string) {
	if op != nil {
		op.SetStage(s)
	}
}

// progress reports a long step's progress as the operation's stage (nil
// without an operation).
func progress(op *operation.Op, stage string) func(done, total uint64) {
	if op == nil {
		return nil
	}
	op.SetProgress(stage, 0, 0, "bytes")
	return func(done, total uint64) { op.SetProgress(stage, done, total, "bytes") }
}

// ListCheckpoints returns a VM's checkpoints, parents before children.
func (f *Service) ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	t, err := LoadTree(v)
	if err != nil {
		return nil, err
	}
	out := []api.Checkpoint{}
	var walk func(parent string)
	walk = func(parent string) {
		for _, c := range t.Checkpoints {
			if c.Parent == parent {
				out = append(out, checkpointAPI(t, c))
				walk(c.ID)
			}
		}
	}
	walk("")
	return out, nil
}

// GetCheckpoint returns one checkpoint by name or id.
func (f *Service) GetCheckpoint(ctx context.Context, name, cp string) (api.Checkpoint, error) {
	_, t, c, err := f.find(name, cp)
	if err != nil {
		return api.Checkpoint{}, err
	}
	return checkpointAPI(t, *c), nil
}

// find looks a VM's checkpoint up by name or id (without the VM's lock:
// operations check again under it).
func (f *Service) find(name, cp string) (hostvm.VM, *checkpoint.Tree, *checkpoint.Checkpoint, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := LoadTree(v)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := t.Get(cp)
	if err != nil {
		return nil, nil, nil, checkpointErr(name, cp, err)
	}
	return v, t, c, nil
}

// RenameCheckpoint renames a checkpoint.
func (f *Service) RenameCheckpoint(ctx context.Context, name, cp string, req api.CheckpointRename) (api.Checkpoint, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return api.Checkpoint{}, err
	}
	unlock, err := f.h.TryLock(v, "checkpoint.rename", nil)
	if err != nil {
		return api.Checkpoint{}, err
	}
	defer unlock()
	t, err := LoadTree(v)
	if err != nil {
		return api.Checkpoint{}, err
	}
	if err := t.Rename(cp, req.Name); err != nil {
		return api.Checkpoint{}, checkpointErr(name, cp, err)
	}
	if err := t.Save(v.Dir()); err != nil {
		return api.Checkpoint{}, err
	}
	c, _ := t.Get(req.Name)
	v.Publish("checkpoint-renamed", cp+" → "+req.Name)
	return checkpointAPI(t, *c), nil
}

// SetType sets the VM's checkpoint type (a setting of hv's, not of the
// machine: it changes in any state).
func SetType(v hostvm.VM, typ string) error {
	switch typ {
	case api.CheckpointProduction, api.CheckpointProductionOnly, api.CheckpointStandard, api.CheckpointDisabled:
	default:
		return fmt.Errorf("checkpoint_type: %q is not a checkpoint type; use production, production-only, standard or disabled: %w", typ, errdefs.ErrInvalid)
	}
	if typ == api.CheckpointProduction {
		typ = "" // the default
	}
	_, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.CheckpointType = typ
		return nil
	})
	return err
}

// CreateCheckpoint takes a checkpoint; the operation's result is the api.Checkpoint.
func (f *Service) CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error) {
	v, err := f.h.VM(name)
	if err != nil {
		return nil, err
	}
	cr, err := checkCreate(name, v.Config().CheckpointType, req)
	if err != nil {
		return nil, err
	}
	return f.h.Locked(v, "checkpoint.create", "checkpoint", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		return f.Create(ctx, op, v, cr)
	})
}

// checkCreate checks a create request against the VM's checkpoint setting
// and fills in the type.
func checkCreate(name, setting string, req api.CheckpointCreate) (Request, error) {
	if req.Name != "" {
		if err := validate.Name("name", req.Name); err != nil {
			return Request{}, err
		}
	}
	typ := req.Type
	if typ == "" {
		typ = setting
	}
	switch {
	case setting == api.CheckpointDisabled:
		return Request{}, errdefs.WithHint(fmt.Errorf("checkpoints of VM %s are disabled: %w", name, errdefs.ErrConflict), "allow them: set the VM's checkpoint_type to production")
	case typ == "":
		typ = api.CheckpointProduction
	case typ != api.CheckpointProduction && typ != api.CheckpointProductionOnly && typ != api.CheckpointStandard:
		return Request{}, fmt.Errorf("type: %q is not a checkpoint type; use production, production-only or standard: %w", typ, errdefs.ErrInvalid)
	}
	if req.FreezeTimeout < 0 || time.Duration(req.FreezeTimeout)*time.Second > guest.MaxFreeze {
		return Request{}, fmt.Errorf("freeze_timeout: %d; give 1 to %d seconds (default 10): %w", req.FreezeTimeout, int(guest.MaxFreeze.Seconds()), errdefs.ErrInvalid)
	}
	return Request{Name: req.Name, Type: typ, FreezeTimeout: req.FreezeTimeout}, nil
}

// Create takes a checkpoint of v in its current state (the VM's lock held).
func (f *Service) Create(ctx context.Context, op *operation.Op, v hostvm.VM, req Request) (api.Checkpoint, error) {
	t, err := f.settledTree(ctx, op, v)
	if err != nil {
		return api.Checkpoint{}, err
	}
	cfg, state := v.Config(), v.State()
	ss, running := v.Session()
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return api.Checkpoint{}, err
	}
	cr := checkpoint.CreateRequest{Name: req.Name, Disks: checkpointDisks(cfg), Config: cfgJSON}
	var c *checkpoint.Checkpoint
	if state == api.StateOff || !running {
		// An Off VM's disks are consistent as they are: production needs no
		// freeze, and there is no memory to keep.
		cr.Type = checkpoint.Production
		if req.Type == api.CheckpointStandard {
			cr.Type = checkpoint.Standard
		}
		stage(op, "creating differencing disks")
		if err = f.offlineImages(v, t, func() (err error) { c, err = f.offline(v).Create(ctx, t, cr); return err }); err != nil {
			return api.Checkpoint{}, wrap(err, "taking a checkpoint of VM %s", v.Name())
		}
	} else if c, err = f.createLive(ctx, op, v, ss, t, cr, req); err != nil {
		return api.Checkpoint{}, err
	}
	if err := syncConfigDisks(v, t); err != nil {
		return api.Checkpoint{}, err
	}
	out := checkpointAPI(t, *c)
	f.h.Log().Info("checkpoint created", "vm", v.Name(), "checkpoint", c.Name, "type", c.Type, "memory", out.HasMemory,
		"frozen_seconds", out.FrozenSeconds, "fell_back", c.FellBack)
	msg := fmt.Sprintf("%s checkpoint %s", c.Type, c.Name)
	if c.FellBack {
		msg += " (production was not possible: " + c.FallbackReason + ")"
	}
	v.Publish("checkpoint-created", msg)
	return out, nil
}

// ApplyCheckpoint goes back to a checkpoint; the operation's result is the api.VM.
func (f *Service) ApplyCheckpoint(name, cp string, req api.CheckpointApply) (*operation.Op, error) {
	v, _, _, err := f.find(name, cp)
	if err != nil {
		return nil, err
	}
	if req.SaveCurrent != "" {
		if err := validate.Name("save_current", req.SaveCurrent); err != nil {
			return nil, err
		}
	}
	return f.h.Locked(v, "checkpoint.apply", "checkpoint-change", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		if err := f.apply(ctx, op, v, cp, req); err != nil {
			return nil, err
		}
		return f.h.Describe(v), nil
	})
}

func (f *Service) apply(ctx context.Context, op *operation.Op, v hostvm.VM, cp string, req api.CheckpointApply) error {
	if req.SaveCurrent != "" {
		stage(op, "keeping the current state as "+req.SaveCurrent)
		if _, err := f.Create(ctx, op, v, Request{Name: req.SaveCurrent, Type: api.CheckpointStandard}); err != nil {
			return wrap(err, "keeping the current state of VM %s", v.Name())
		}
	}
	t, err := f.settledTree(ctx, op, v)
	if err != nil {
		return err
	}
	target, err := t.Get(cp)
	if err != nil {
		return err
	}
	targetCopy := *target
	reason := "checkpoint " + target.Name + " applied"
	if err := f.stopForApply(op, v, reason); err != nil {
		return err
	}
	stage(op, "creating differencing disks")
	if err := f.offlineImages(v, t, func() error { return f.offline(v).Apply(ctx, t, targetCopy.ID) }); err != nil {
		return wrap(err, "applying checkpoint %s of VM %s", targetCopy.Name, v.Name())
	}
	if err := configFromCheckpoint(v, t, targetCopy); err != nil {
		return err
	}
	f.h.Log().Info("checkpoint applied", "vm", v.Name(), "checkpoint", targetCopy.Name, "memory", targetCopy.StateFile != "")
	v.Publish("checkpoint-applied", targetCopy.Name)
	if targetCopy.StateFile == "" {
		return nil // production: the VM is Off and boots cold when started
	}
	if err := restoreFrom(v, targetCopy, reason); err != nil {
		return err
	}
	stage(op, "restoring memory")
	return f.h.Start(ctx, op, v)
}

// stopForApply turns a running VM off, and discards a saved state, before its
// disks go back to a checkpoint.
func (f *Service) stopForApply(op *operation.Op, v hostvm.VM, reason string) error {
	if _, running := v.Session(); running {
		stage(op, "turning the VM off")
		return f.h.TurnOff(v, reason)
	}
	if v.State() != api.StateSaved {
		return nil
	}
	// As in Hyper-V, applying a checkpoint discards a saved state.
	if err := os.Remove(v.Path(hostvm.SavedState)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("discarding the saved state of VM %s: %v; check the VM directory's permissions, then apply again: %w", v.Name(), err, errdefs.ErrUnavailable)
	}
	return v.SetState(api.StateOff, reason)
}

// restoreFrom makes a standard checkpoint's state file the VM's saved state
// (a hard link: the checkpoint keeps its own), so that a start restores it.
func restoreFrom(v hostvm.VM, c checkpoint.Checkpoint, reason string) error {
	var m machineLayout
	if err := json.Unmarshal(c.Machine, &m); err != nil || m.BootMemoryBytes == 0 {
		return fmt.Errorf("checkpoint %s has a state file but no machine layout; its disks were applied, start the VM to boot cold: %w", c.Name, errdefs.ErrInvalid)
	}
	_ = os.Remove(v.Path(hostvm.SavedState))
	if err := os.Link(v.Path(c.StateFile), v.Path(hostvm.SavedState)); err != nil {
		return fmt.Errorf("preparing the restore of checkpoint %s: %v; the VM directory's file system must allow hard links; its disks were applied, start the VM to boot cold: %w", c.Name, err, errdefs.ErrUnavailable)
	}
	// The layout and the state Saved in one durable write: a Saved VM
	// without its layout could not be restored. The VM is Off here, so
	// nothing else follows from the change of state.
	return v.UpdateRuntime(func(rt *vmconfig.Runtime) {
		rt.BootMemoryBytes, rt.MaxMemoryBytes, rt.HotplugPorts = m.BootMemoryBytes, m.MaxMemoryBytes, m.HotplugPorts
		rt.UptimeBefore, rt.SavedPaused = m.Uptime, m.Paused
		rt.Accel, rt.CPUModel = m.Accel, m.CPUModel
		rt.State, rt.Reason = api.StateSaved, reason
	})
}

// configFromCheckpoint gives the VM the hardware it had at the checkpoint, on
// the tree's new active overlays. Identity (name, ID, MACs), integration
// settings and the firmware's variable store stay as they are now.
func configFromCheckpoint(v hostvm.VM, t *checkpoint.Tree, c checkpoint.Checkpoint) error {
	var old vmconfig.Config
	if err := json.Unmarshal(c.Config, &old); err != nil || len(old.Disks) == 0 {
		// No usable configuration recorded: keep today's, on the new disks.
		return syncConfigDisks(v, t)
	}
	_, err := v.UpdateConfig(func(cfg *vmconfig.Config) error {
		macs := map[string]string{}
		for _, n := range cfg.NICs {
			macs[n.Name] = n.MAC
		}
		cfg.CPUs, cfg.MemoryBytes, cfg.MaxMemoryBytes, cfg.DynamicMemory = old.CPUs, old.MemoryBytes, old.MaxMemoryBytes, old.DynamicMemory
		cfg.Kernel, cfg.Initrd, cfg.Cmdline, cfg.Nested, cfg.CPUCompat, cfg.SecureBoot = old.Kernel, old.Initrd, old.Cmdline, old.Nested, old.CPUCompat, old.SecureBoot
		cfg.Disks = slices.Clone(old.Disks)
		for i, d := range cfg.Disks {
			if a := t.Active[d.Name]; a != "" {
				cfg.Disks[i].File, cfg.Disks[i].Format = a, "qcow2"
			}
		}
		cfg.NICs = slices.Clone(old.NICs)
		for i, n := range cfg.NICs {
			if m, ok := macs[n.Name]; ok {
				cfg.NICs[i].MAC = m
			}
		}
		return nil
	})
	return err
}

// DeleteCheckpoint deletes a checkpoint (and its descendants with subtree),
// merging its data while the VM runs; the operation has no result.
func (f *Service) DeleteCheckpoint(name, cp string, subtree bool) (*operation.Op, error) {
	v, _, _, err := f.find(name, cp)
	if err != nil {
		return nil, err
	}
	return f.h.Locked(v, "checkpoint.delete", "checkpoint-change", func(ctx context.Context, op *operation.Op, v hostvm.VM) (any, error) {
		return nil, f.Delete(ctx, op, v, cp, subtree)
	})
}

// Delete deletes checkpoint cp of v (the VM's lock held): merged live through
// QEMU while it runs, with qemu-img otherwise.
func (f *Service) Delete(ctx context.Context, op *operation.Op, v hostvm.VM, cp string, subtree bool) error {
	t, err := f.settledTree(ctx, op, v)
	if err != nil {
		return err
	}
	c, err := t.Get(cp)
	if err != nil {
		return err
	}
	cname := c.Name
	ss, running := v.Session()
	if !running {
		stage(op, "merging")
		if err := f.offlineImages(v, t, func() error { return f.offline(v).Delete(ctx, t, cp, subtree) }); err != nil {
			return wrap(err, "deleting checkpoint %s of VM %s", cname, v.Name())
		}
	} else {
		plan, err := t.PlanDelete(cp, subtree)
		if err != nil {
			return err
		}
		if err := t.BeginDelete(plan); err != nil {
			return err
		}
		if err := t.Save(v.Dir()); err != nil {
			return err
		}
		f.h.Hook("checkpoint:delete-begun")
		if err := f.runDelete(ctx, op, v, ss, t); err != nil {
			return wrap(err, "deleting checkpoint %s of VM %s (it finishes when retried or when hvd restarts)", cname, v.Name())
		}
	}
	f.h.Log().Info("checkpoint deleted", "vm", v.Name(), "checkpoint", cname, "subtree", subtree, "live", running)
	v.Publish("checkpoint-deleted", cname)
	return nil
}
