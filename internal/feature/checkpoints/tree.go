package checkpoints

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The tree of a VM: reading it, settling what an operation left unfinished,
// committing a result, and keeping the configuration on the tree's active
// overlays.

func (f *Service) offline(v hostvm.VM) *checkpoint.Offline {
	return &checkpoint.Offline{Dir: v.Dir(), Tool: f.h.Disk(), Hook: func(at string) error {
		f.h.Hook("checkpoint:" + strings.ReplaceAll(at, " ", "-"))
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

// checkpointErr puts the VM into an error about one of its checkpoints.
func checkpointErr(vmName, cp string, err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return errdefs.WithHint(fmt.Errorf("checkpoint %q of VM %s does not exist: %w", cp, vmName, errdefs.ErrNotFound), "see the VM's checkpoints for their names")
	}
	return fmt.Errorf("VM %s: %w", vmName, err)
}

// LoadTree reads a VM's checkpoint tree (hold the VM's lock for anything
// that writes it).
func LoadTree(v hostvm.VM) (*checkpoint.Tree, error) {
	t, err := checkpoint.Load(v.Dir())
	if err != nil {
		return nil, wrap(err, "reading the checkpoints of VM %s", v.Name())
	}
	return t, nil
}

// settledTree is the VM's tree with any unfinished operation settled first
// (the VM's lock held): what a new checkpoint operation starts from. Every
// image it names is checked (checkpoint.Verify) before the operation opens,
// rebases or merges any of them.
func (f *Service) settledTree(ctx context.Context, op *operation.Op, v hostvm.VM) (*checkpoint.Tree, error) {
	t, err := LoadTree(v)
	if err != nil {
		return nil, err
	}
	if err := f.settleJournal(ctx, op, v, t); err != nil {
		return nil, err
	}
	if err := t.Verify(ctx, v.Dir(), f.h.Disk()); err != nil {
		return nil, wrap(err, "checking the checkpoints of VM %s", v.Name())
	}
	return t, nil
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
func (f *Service) commitTree(ctx context.Context, v hostvm.VM, t *checkpoint.Tree, kind string) error {
	touched := t.Journal.Touched()
	if err := t.Commit(); err != nil {
		return err
	}
	_ = t.Measure(ctx, v.Dir(), f.h.Disk(), touched) // sizes inform; a failure must not undo the operation
	if err := t.Save(v.Dir()); err != nil {
		return err
	}
	f.h.Hook("checkpoint:" + kind + "-committed")
	if err := syncConfigDisks(v, t); err != nil {
		return err
	}
	closeRemoved(v, t)
	return f.offline(v).Finish(t)
}

// syncConfigDisks makes the configuration name the tree's active overlays:
// the tree is the truth, the configuration follows it.
func syncConfigDisks(v hostvm.VM, t *checkpoint.Tree) error {
	changed := false
	for _, d := range v.Config().Disks {
		if a := t.Active[d.Name]; a != "" && a != d.File {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	_, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		for i, d := range c.Disks {
			if a := t.Active[d.Name]; a != "" {
				c.Disks[i].File, c.Disks[i].Format = a, "qcow2"
			}
		}
		return nil
	})
	return err
}

// DiskChains returns, per disk, the images its active overlay backs on, for
// QEMU's command line, after checking every image of every disk against the
// tree and the configuration (disk.CheckVMImage): QEMU opens nothing whose
// header names a file hv does not know, or a format other than recorded.
func (f *Service) DiskChains(ctx context.Context, v hostvm.VM, cfg vmconfig.Config) (map[string][]qemu.Image, error) {
	t, err := LoadTree(v)
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
			if _, err := f.h.Disk().CheckVMImage(ctx, v.Path(file), format, backing, backingFormat); err != nil {
				return nil, wrap(err, "disk %s of VM %s", d.Name, v.Name())
			}
			if i == len(chain) {
				break
			}
			out[d.Name] = append(out[d.Name], qemu.Image{Path: v.Path(backing), Format: backingFormat})
			file, format = backing, backingFormat
		}
	}
	return out, nil
}

// Recover, at hvd's start, finishes or undoes a checkpoint operation a crash
// of hvd cut short, then makes the configuration name the tree's active
// overlays. A live merge goes on in the background under the VM's lock, so
// hvd starts at once; a kill of the VM cancels it, and a QEMU that stops
// answering ends it.
func (f *Service) Recover(ctx context.Context, v hostvm.VM) {
	t, err := checkpoint.Load(v.Dir())
	if err != nil {
		f.h.Log().Error("reading a VM's checkpoints", "vm", v.Name(), "err", err)
		return
	}
	if _, running := v.Session(); t.Journal != nil && t.Journal.Kind == checkpoint.KindDelete && running {
		mctx, cancel := context.WithCancel(context.Background())
		unlock, err := f.h.TryLock(v, "checkpoint.recover", cancel)
		if err != nil {
			cancel()
			return
		}
		go func() {
			defer cancel()
			defer unlock()
			if err := f.settleJournal(mctx, nil, v, t); err != nil {
				f.h.Log().Error("finishing a checkpoint delete after a restart", "vm", v.Name(), "err", err)
				return
			}
			f.h.Log().Info("checkpoint delete finished after a restart", "vm", v.Name())
		}()
		return
	}
	if err := f.settleJournal(ctx, nil, v, t); err != nil {
		f.h.Log().Error("recovering a VM's checkpoints; it keeps its disks as they are", "vm", v.Name(), "err", err)
	}
}

// settleJournal finishes or undoes the operation t's journal records (cut
// short by a crash of hvd, or by a failure the caller gave up on), leaving t
// without a journal, and makes the configuration follow the tree. For a
// running VM it asks QEMU what happened; for the others the files tell
// (checkpoint.Recover). Every operation that changes the tree runs it first,
// so a failed one is finished by the next instead of blocking it.
func (f *Service) settleJournal(ctx context.Context, op *operation.Op, v hostvm.VM, t *checkpoint.Tree) error {
	if j := t.Journal; j != nil {
		ss, running := v.Session()
		var err error
		switch {
		case !running:
			var rt *checkpoint.Tree
			if rt, err = checkpoint.Recover(ctx, v.Dir(), f.h.Disk()); err == nil {
				*t = *rt
			}
		case j.Kind == checkpoint.KindDelete:
			err = f.runDelete(ctx, op, v, ss, t)
		case j.Kind == checkpoint.KindCreate && j.Step != checkpoint.StepCommitted:
			err = f.recoverLiveCreate(ctx, v, ss, t)
		default:
			err = f.offline(v).Finish(t)
		}
		if err != nil {
			return wrap(err, "finishing the unfinished checkpoint %s of VM %s", j.Kind, v.Name())
		}
		f.h.Log().Info("unfinished checkpoint operation settled", "vm", v.Name(), "kind", j.Kind)
	}
	return syncConfigDisks(v, t)
}

// offlineImages runs fn, which writes the VM's images while no QEMU has them
// open (an offline checkpoint operation): changes found before it are
// recorded as lost, and the images are stamped again after it, as the tree
// names them (the configuration follows the tree only after the caller's
// next step).
func (f *Service) offlineImages(v hostvm.VM, t *checkpoint.Tree, fn func() error) error {
	return f.tracker.Offline(v.Dir(), v.Config(), fn, func() vmconfig.Config {
		cfg := v.Config()
		for i, d := range cfg.Disks {
			if a := t.Active[d.Name]; a != "" {
				cfg.Disks[i].File = a
			}
		}
		return cfg
	})
}
