package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/validate"
	"github.com/hvproject/hv/internal/vmconfig"
)

// Checkpoints are Hyper-V's: production (the guest freezes its file systems;
// disks only; applied by a cold boot) and standard (disks plus memory and
// device state). Their disks are qcow2 overlays kept by internal/checkpoint;
// this file carries its plans out on a live VM through QMP, and offline with
// qemu-img through checkpoint.Offline.

// checkpointMachine is what a standard checkpoint's state file needs to be
// loaded again: QEMU must rebuild the machine exactly as it was.
type checkpointMachine struct {
	BootMemoryBytes uint64        `json:"boot_memory_bytes"`
	MaxMemoryBytes  uint64        `json:"max_memory_bytes,omitempty"`
	HotplugPorts    int           `json:"hotplug_ports,omitempty"`
	Uptime          time.Duration `json:"uptime"`
	Paused          bool          `json:"paused,omitempty"`
	Accel           string        `json:"accel,omitempty"`
	CPUModel        string        `json:"cpu_model,omitempty"`
}

// checkpointRequest is a create as the host carries it out.
type checkpointRequest struct {
	name          string
	typ           string // api.CheckpointProduction, ProductionOnly or Standard
	freezeTimeout int
	noMemory      bool // a standard checkpoint without memory (export's crash-consistent fallback)
}

func (s *Service) offline(v *vm) *checkpoint.Offline {
	return &checkpoint.Offline{Dir: v.dir, Tool: s.disk, Hook: func(at string) error {
		s.hook("checkpoint:" + strings.ReplaceAll(at, " ", "-"))
		return nil
	}}
}

func checkpointDisks(cfg vmconfig.Config) []checkpoint.Disk {
	out := make([]checkpoint.Disk, 0, len(cfg.Disks))
	for _, d := range cfg.Disks {
		out = append(out, checkpoint.Disk{Name: d.Name, File: d.File, Format: d.Format})
	}
	return out
}

// checkpointAPI turns a tree node into its API form.
func checkpointAPI(t *checkpoint.Tree, c checkpoint.Checkpoint) api.Checkpoint {
	out := api.Checkpoint{
		ID: c.ID, Name: c.Name, Type: string(c.Type), CreatedAt: c.CreatedAt, Current: t.Current == c.ID,
		HasMemory: c.StateFile != "", FrozenSeconds: float64(c.FrozenMillis) / 1000,
		FellBack: c.FellBack, FallbackReason: c.FallbackReason, SizeBytes: c.SizeBytes, Disks: []string{},
	}
	if p, err := t.Get(c.Parent); err == nil && c.Parent != "" {
		out.Parent = p.Name
	}
	for d := range c.Disks {
		out.Disks = append(out.Disks, d)
	}
	slices.Sort(out.Disks)
	return out
}

// checkpointErr puts the VM into an error about one of its checkpoints, with
// the command that lists them.
func checkpointErr(vmName, cp string, err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return errdefs.WithHint(fmt.Errorf("checkpoint %q of VM %s does not exist: %w", cp, vmName, errdefs.ErrNotFound), "see the VM's checkpoints for their names")
	}
	return fmt.Errorf("VM %s: %w", vmName, err)
}

// loadTree reads a VM's checkpoint tree (call with the VM's lock held for
// anything that writes it).
func (s *Service) loadTree(v *vm) (*checkpoint.Tree, error) {
	t, err := checkpoint.Load(v.dir)
	if err != nil {
		return nil, errWrap(err, "reading the checkpoints of VM %s", v.name)
	}
	return t, nil
}

// settledTree is the VM's tree with any unfinished operation settled first
// (the VM's lock held): what a new checkpoint operation starts from. Every
// image it names is checked (checkpoint.Verify) before the operation opens,
// rebases or merges any of them.
func (s *Service) settledTree(ctx context.Context, op *operation.Op, v *vm) (*checkpoint.Tree, error) {
	t, err := s.loadTree(v)
	if err != nil {
		return nil, err
	}
	if err := s.settleJournal(ctx, op, v, t); err != nil {
		return nil, err
	}
	if err := t.Verify(ctx, v.dir, s.disk); err != nil {
		return nil, errWrap(err, "checking the checkpoints of VM %s", v.name)
	}
	return t, nil
}

// ListCheckpoints returns a VM's checkpoints, parents before children.
func (s *Service) ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	t, err := s.loadTree(v)
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
func (s *Service) GetCheckpoint(ctx context.Context, name, cp string) (api.Checkpoint, error) {
	_, t, c, err := s.findCheckpoint(name, cp)
	if err != nil {
		return api.Checkpoint{}, err
	}
	return checkpointAPI(t, *c), nil
}

// findCheckpoint looks a VM's checkpoint up by name or id (without the VM's
// lock: operations check again under it).
func (s *Service) findCheckpoint(name, cp string) (*vm, *checkpoint.Tree, *checkpoint.Checkpoint, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := s.loadTree(v)
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
func (s *Service) RenameCheckpoint(ctx context.Context, name, cp string, req api.CheckpointRename) (api.Checkpoint, error) {
	v, err := s.get(name)
	if err != nil {
		return api.Checkpoint{}, err
	}
	if err := v.acquire("checkpoint.rename", "", nil); err != nil {
		return api.Checkpoint{}, err
	}
	defer v.release()
	t, err := s.loadTree(v)
	if err != nil {
		return api.Checkpoint{}, err
	}
	if err := t.Rename(cp, req.Name); err != nil {
		return api.Checkpoint{}, checkpointErr(name, cp, err)
	}
	if err := t.Save(v.dir); err != nil {
		return api.Checkpoint{}, err
	}
	c, _ := t.Get(req.Name)
	s.publishVM(v, "checkpoint-renamed", cp+" → "+req.Name)
	return checkpointAPI(t, *c), nil
}

func (s *Service) setCheckpointType(v *vm, typ string) error {
	switch typ {
	case api.CheckpointProduction, api.CheckpointProductionOnly, api.CheckpointStandard, api.CheckpointDisabled:
	default:
		return fmt.Errorf("checkpoint_type: %q is not a checkpoint type; use production, production-only, standard or disabled: %w", typ, errdefs.ErrInvalid)
	}
	if typ == api.CheckpointProduction {
		typ = "" // the default
	}
	_, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		c.CheckpointType = typ
		return nil
	})
	return err
}

// CreateCheckpoint takes a checkpoint; the operation's result is the api.Checkpoint.
func (s *Service) CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error) {
	v, err := s.get(name)
	if err != nil {
		return nil, err
	}
	if req.Name != "" {
		if err := validate.Name("name", req.Name); err != nil {
			return nil, err
		}
	}
	v.mu.Lock()
	setting := v.cfg.CheckpointType
	v.mu.Unlock()
	typ := req.Type
	if typ == "" {
		typ = setting
	}
	switch {
	case setting == api.CheckpointDisabled:
		return nil, errdefs.WithHint(fmt.Errorf("checkpoints of VM %s are disabled: %w", name, errdefs.ErrConflict), "allow them: set the VM's checkpoint_type to production")
	case typ == "":
		typ = api.CheckpointProduction
	case typ != api.CheckpointProduction && typ != api.CheckpointProductionOnly && typ != api.CheckpointStandard:
		return nil, fmt.Errorf("type: %q is not a checkpoint type; use production, production-only or standard: %w", typ, errdefs.ErrInvalid)
	}
	if req.FreezeTimeout < 0 || time.Duration(req.FreezeTimeout)*time.Second > guest.MaxFreeze {
		return nil, fmt.Errorf("freeze_timeout: %d; give 1 to %d seconds (default 10): %w", req.FreezeTimeout, int(guest.MaxFreeze.Seconds()), errdefs.ErrInvalid)
	}
	cr := checkpointRequest{name: req.Name, typ: typ, freezeTimeout: req.FreezeTimeout}
	return s.lockedDo(v, "checkpoint.create", "checkpoint", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		return s.createCheckpoint(ctx, op, v, cr)
	})
}

// createCheckpoint takes a checkpoint of v in its current state (the VM's lock held).
func (s *Service) createCheckpoint(ctx context.Context, op *operation.Op, v *vm, req checkpointRequest) (api.Checkpoint, error) {
	t, err := s.settledTree(ctx, op, v)
	if err != nil {
		return api.Checkpoint{}, err
	}
	v.mu.Lock()
	cfg, state, ss := v.cfg, v.rt.State, v.sess
	v.mu.Unlock()
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return api.Checkpoint{}, err
	}
	cr := checkpoint.CreateRequest{Name: req.name, Disks: checkpointDisks(cfg), Config: cfgJSON}
	var c *checkpoint.Checkpoint
	if state == api.StateOff || ss == nil {
		// An Off VM's disks are consistent as they are: production needs no
		// freeze, and there is no memory to keep.
		cr.Type = checkpoint.Production
		if req.typ == api.CheckpointStandard {
			cr.Type = checkpoint.Standard
		}
		op.SetStage("creating differencing disks")
		if err = s.offlineImages(v, t, func() (err error) { c, err = s.offline(v).Create(ctx, t, cr); return err }); err != nil {
			return api.Checkpoint{}, errWrap(err, "taking a checkpoint of VM %s", v.name)
		}
	} else {
		if c, err = s.createLive(ctx, op, v, ss, t, cr, req); err != nil {
			return api.Checkpoint{}, err
		}
	}
	if err := s.syncConfigDisks(v, t); err != nil {
		return api.Checkpoint{}, err
	}
	out := checkpointAPI(t, *c)
	s.log.Info("checkpoint created", "vm", v.name, "checkpoint", c.Name, "type", c.Type, "memory", out.HasMemory,
		"frozen_seconds", out.FrozenSeconds, "fell_back", c.FellBack)
	msg := fmt.Sprintf("%s checkpoint %s", c.Type, c.Name)
	if c.FellBack {
		msg += " (production was not possible: " + c.FallbackReason + ")"
	}
	s.publishVM(v, "checkpoint-created", msg)
	return out, nil
}

// laps times the stages of an operation for the debug log.
type laps struct {
	last time.Time
	kv   []any
}

func newLaps() *laps { return &laps{last: time.Now()} }

func (l *laps) lap(name string) {
	now := time.Now()
	l.kv = append(l.kv, name, now.Sub(l.last).Round(time.Microsecond))
	l.last = now
}

func (l *laps) attrs() []any { return l.kv }

// commitTree records a journaled operation's result, points the configuration
// at the new active overlays, then deletes what the result no longer needs.
func (s *Service) commitTree(ctx context.Context, v *vm, t *checkpoint.Tree, kind string) error {
	touched := t.Journal.Touched()
	if err := t.Commit(); err != nil {
		return err
	}
	_ = t.Measure(ctx, v.dir, s.disk, touched) // sizes inform; a failure must not undo the operation
	if err := t.Save(v.dir); err != nil {
		return err
	}
	s.hook("checkpoint:" + kind + "-committed")
	if err := s.syncConfigDisks(v, t); err != nil {
		return err
	}
	s.closeRemoved(v, t)
	return s.offline(v).Finish(t)
}

// syncConfigDisks makes the configuration name the tree's active overlays:
// the tree is the truth, the configuration follows it.
func (s *Service) syncConfigDisks(v *vm, t *checkpoint.Tree) error {
	v.mu.Lock()
	changed := false
	for _, d := range v.cfg.Disks {
		if a := t.Active[d.Name]; a != "" && a != d.File {
			changed = true
		}
	}
	v.mu.Unlock()
	if !changed {
		return nil
	}
	_, err := s.updateConfig(v, func(c *vmconfig.Config) error {
		for i, d := range c.Disks {
			if a := t.Active[d.Name]; a != "" {
				c.Disks[i].File, c.Disks[i].Format = a, "qcow2"
			}
		}
		return nil
	})
	return err
}

// diskChains returns, per disk, the images its active overlay backs on, for
// QEMU's command line, after checking every image of every disk against the
// tree and the configuration (disk.CheckVMImage): QEMU opens nothing whose
// header names a file hv does not know, or a format other than recorded.
func (s *Service) diskChains(ctx context.Context, v *vm, cfg vmconfig.Config) (map[string][]qemu.Image, error) {
	t, err := s.loadTree(v)
	if err != nil {
		return nil, err
	}
	out := map[string][]qemu.Image{}
	for _, d := range cfg.Disks {
		chain := t.Chain(d.Name)
		file, format := d.File, d.Format
		for i := 0; ; i++ {
			backing, backingFormat := "", ""
			if i < len(chain) {
				backing, backingFormat = chain[i].File, chain[i].Format
			}
			if _, err := s.disk.CheckVMImage(ctx, v.path(file), format, backing, backingFormat); err != nil {
				return nil, errWrap(err, "disk %s of VM %s", d.Name, v.name)
			}
			if i == len(chain) {
				break
			}
			out[d.Name] = append(out[d.Name], qemu.Image{Path: v.path(backing), Format: backingFormat})
			file, format = backing, backingFormat
		}
	}
	return out, nil
}

// ApplyCheckpoint goes back to a checkpoint; the operation's result is the api.VM.
func (s *Service) ApplyCheckpoint(name, cp string, req api.CheckpointApply) (*operation.Op, error) {
	v, _, _, err := s.findCheckpoint(name, cp)
	if err != nil {
		return nil, err
	}
	if req.SaveCurrent != "" {
		if err := validate.Name("save_current", req.SaveCurrent); err != nil {
			return nil, err
		}
	}
	return s.lockedDo(v, "checkpoint.apply", "checkpoint-change", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		if err := s.applyCheckpoint(ctx, op, v, cp, req); err != nil {
			return nil, err
		}
		return v.toAPI(s.currentAccel().Name), nil
	})
}

func (s *Service) applyCheckpoint(ctx context.Context, op *operation.Op, v *vm, cp string, req api.CheckpointApply) error {
	if req.SaveCurrent != "" {
		op.SetStage("keeping the current state as " + req.SaveCurrent)
		if _, err := s.createCheckpoint(ctx, op, v, checkpointRequest{name: req.SaveCurrent, typ: api.CheckpointStandard}); err != nil {
			return errWrap(err, "keeping the current state of VM %s", v.name)
		}
	}
	t, err := s.settledTree(ctx, op, v)
	if err != nil {
		return err
	}
	target, err := t.Get(cp)
	if err != nil {
		return err
	}
	targetCopy := *target
	v.mu.Lock()
	state, ss := v.rt.State, v.sess
	v.mu.Unlock()
	reason := "checkpoint " + target.Name + " applied"
	switch {
	case ss != nil:
		op.SetStage("turning the VM off")
		if err := s.turnOff(v, ss, reason); err != nil {
			return err
		}
	case state == api.StateSaved:
		// As in Hyper-V, applying a checkpoint discards a saved state.
		if err := os.Remove(v.path(fileSave)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("discarding the saved state of VM %s: %v; check the VM directory's permissions, then apply again: %w", v.name, err, errdefs.ErrUnavailable)
		}
		if err := s.setState(v, api.StateOff, reason); err != nil {
			return err
		}
	}
	op.SetStage("creating differencing disks")
	if err := s.offlineImages(v, t, func() error { return s.offline(v).Apply(ctx, t, targetCopy.ID) }); err != nil {
		return errWrap(err, "applying checkpoint %s of VM %s", targetCopy.Name, v.name)
	}
	if err := s.configFromCheckpoint(v, t, targetCopy); err != nil {
		return err
	}
	s.log.Info("checkpoint applied", "vm", v.name, "checkpoint", targetCopy.Name, "memory", targetCopy.StateFile != "")
	s.publishVM(v, "checkpoint-applied", targetCopy.Name)
	if targetCopy.StateFile == "" {
		return nil // production: the VM is Off and boots cold when started
	}
	var m checkpointMachine
	if err := json.Unmarshal(targetCopy.Machine, &m); err != nil || m.BootMemoryBytes == 0 {
		return fmt.Errorf("checkpoint %s has a state file but no machine layout; its disks were applied, start the VM to boot cold: %w", targetCopy.Name, errdefs.ErrInvalid)
	}
	// The state file becomes the VM's saved state (a hard link: the
	// checkpoint keeps its own), and a start restores it.
	_ = os.Remove(v.path(fileSave))
	if err := os.Link(v.path(targetCopy.StateFile), v.path(fileSave)); err != nil {
		return fmt.Errorf("preparing the restore of checkpoint %s: %v; the VM directory's file system must allow hard links; its disks were applied, start the VM to boot cold: %w", targetCopy.Name, err, errdefs.ErrUnavailable)
	}
	v.mu.Lock()
	v.rt.BootMemoryBytes, v.rt.MaxMemoryBytes, v.rt.HotplugPorts = m.BootMemoryBytes, m.MaxMemoryBytes, m.HotplugPorts
	v.rt.UptimeBefore, v.rt.SavedPaused = m.Uptime, m.Paused
	v.rt.Accel, v.rt.CPUModel = m.Accel, m.CPUModel
	err = v.setStateLocked(api.StateSaved, reason)
	v.mu.Unlock()
	if err != nil {
		return err
	}
	op.SetStage("restoring memory")
	return s.doStart(ctx, op, v)
}

// configFromCheckpoint gives the VM the hardware it had at the checkpoint, on
// the tree's new active overlays. Identity (name, ID, MACs), integration
// settings and the firmware's variable store stay as they are now.
func (s *Service) configFromCheckpoint(v *vm, t *checkpoint.Tree, c checkpoint.Checkpoint) error {
	var old vmconfig.Config
	if err := json.Unmarshal(c.Config, &old); err != nil || len(old.Disks) == 0 {
		// No usable configuration recorded: keep today's, on the new disks.
		return s.syncConfigDisks(v, t)
	}
	_, err := s.updateConfig(v, func(cfg *vmconfig.Config) error {
		macs := map[string]string{}
		for _, n := range cfg.NICs {
			macs[n.Name] = n.MAC
		}
		cfg.CPUs, cfg.MemoryBytes, cfg.MaxMemoryBytes, cfg.DynamicMemory = old.CPUs, old.MemoryBytes, old.MaxMemoryBytes, old.DynamicMemory
		cfg.Kernel, cfg.Initrd, cfg.Cmdline, cfg.Nested, cfg.SecureBoot = old.Kernel, old.Initrd, old.Cmdline, old.Nested, old.SecureBoot
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
func (s *Service) DeleteCheckpoint(name, cp string, subtree bool) (*operation.Op, error) {
	v, _, _, err := s.findCheckpoint(name, cp)
	if err != nil {
		return nil, err
	}
	return s.lockedDo(v, "checkpoint.delete", "checkpoint-change", func(ctx context.Context, op *operation.Op, v *vm) (any, error) {
		return nil, s.deleteCheckpoint(ctx, op, v, cp, subtree)
	})
}

func (s *Service) deleteCheckpoint(ctx context.Context, op *operation.Op, v *vm, cp string, subtree bool) error {
	t, err := s.settledTree(ctx, op, v)
	if err != nil {
		return err
	}
	c, err := t.Get(cp)
	if err != nil {
		return err
	}
	cname := c.Name
	v.mu.Lock()
	ss := v.sess
	v.mu.Unlock()
	if ss == nil {
		op.SetStage("merging")
		if err := s.offlineImages(v, t, func() error { return s.offline(v).Delete(ctx, t, cp, subtree) }); err != nil {
			return errWrap(err, "deleting checkpoint %s of VM %s", cname, v.name)
		}
	} else {
		plan, err := t.PlanDelete(cp, subtree)
		if err != nil {
			return err
		}
		if err := t.BeginDelete(plan); err != nil {
			return err
		}
		if err := t.Save(v.dir); err != nil {
			return err
		}
		s.hook("checkpoint:delete-begun")
		if err := s.runDelete(ctx, op, v, ss, t); err != nil {
			return errWrap(err, "deleting checkpoint %s of VM %s (it finishes when retried or when hvd restarts)", cname, v.name)
		}
	}
	s.log.Info("checkpoint deleted", "vm", v.name, "checkpoint", cname, "subtree", subtree, "live", ss != nil)
	s.publishVM(v, "checkpoint-deleted", cname)
	return nil
}

// recoverCheckpoints finishes or undoes a checkpoint operation a crash of hvd
// cut short, then makes the configuration name the tree's active overlays. A
// live merge goes on in the background under the VM's lock, so hvd starts at
// once.
func (s *Service) recoverCheckpoints(ctx context.Context, v *vm) {
	t, err := checkpoint.Load(v.dir)
	if err != nil {
		s.log.Error("reading a VM's checkpoints", "vm", v.name, "err", err)
		return
	}
	if t.Journal != nil && t.Journal.Kind == checkpoint.KindDelete && v.sess != nil {
		// hv vm kill cancels it; a QEMU that stops answering ends it.
		mctx, cancel := context.WithCancel(context.Background())
		if err := v.acquire("checkpoint.recover", "", cancel); err != nil {
			cancel()
			return
		}
		go func() {
			defer cancel()
			defer v.release()
			if err := s.settleJournal(mctx, nil, v, t); err != nil {
				s.log.Error("finishing a checkpoint delete after a restart", "vm", v.name, "err", err)
				return
			}
			s.log.Info("checkpoint delete finished after a restart", "vm", v.name)
		}()
		return
	}
	if err := s.settleJournal(ctx, nil, v, t); err != nil {
		s.log.Error("recovering a VM's checkpoints; it keeps its disks as they are", "vm", v.name, "err", err)
	}
}

// settleJournal finishes or undoes the operation t's journal records (cut
// short by a crash of hvd, or by a failure the caller gave up on), leaving t
// without a journal, and makes the configuration follow the tree. For a
// running VM it asks QEMU what happened; for the others the files tell
// (checkpoint.Recover). Every operation that changes the tree runs it first,
// so a failed one is finished by the next instead of blocking it.
func (s *Service) settleJournal(ctx context.Context, op *operation.Op, v *vm, t *checkpoint.Tree) error {
	if j := t.Journal; j != nil {
		v.mu.Lock()
		ss := v.sess
		v.mu.Unlock()
		var err error
		switch {
		case ss == nil:
			var rt *checkpoint.Tree
			if rt, err = checkpoint.Recover(ctx, v.dir, s.disk); err == nil {
				*t = *rt
			}
		case j.Kind == checkpoint.KindDelete:
			err = s.runDelete(ctx, op, v, ss, t)
		case j.Kind == checkpoint.KindCreate && j.Step != checkpoint.StepCommitted:
			err = s.recoverLiveCreate(ctx, v, ss, t)
		default:
			err = s.offline(v).Finish(t)
		}
		if err != nil {
			return errWrap(err, "finishing the unfinished checkpoint %s of VM %s", j.Kind, v.name)
		}
		s.log.Info("unfinished checkpoint operation settled", "vm", v.name, "kind", j.Kind)
	}
	return s.syncConfigDisks(v, t)
}

// offlineImages runs fn, which writes the VM's images while no QEMU has them
// open (an offline checkpoint operation): changes found before it are
// recorded as lost, and the images are stamped again after it, as the tree
// names them (the configuration follows the tree only after the caller's
// next step).
func (s *Service) offlineImages(v *vm, t *checkpoint.Tree, fn func() error) error {
	return s.tracker.Offline(v.dir, v.Config(), fn, func() vmconfig.Config {
		cfg := v.Config()
		for i, d := range cfg.Disks {
			if f := t.Active[d.Name]; f != "" {
				cfg.Disks[i].File = f
			}
		}
		return cfg
	})
}
