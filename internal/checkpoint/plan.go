package checkpoint

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Disk is one of the VM's disks as its configuration names it now.
type Disk struct {
	Name   string // the disk's name in the VM's configuration
	File   string // relative to the VM's directory
	Format string // qcow2 or raw
}

// CreateRequest asks for a new checkpoint of the VM's current state.
type CreateRequest struct {
	Name   string // "" picks one from the time
	Type   Type
	Disks  []Disk          // every disk of the VM
	Config json.RawMessage // the VM's configuration now
	Memory bool            // plan a state file (a standard checkpoint of a running VM)
	Now    time.Time       // zero means time.Now()
}

// Overlay is a new qcow2 file on top of Backing (both relative to the VM's directory).
type Overlay struct {
	Disk          string `json:"disk"`
	File          string `json:"file"`
	Backing       string `json:"backing"`
	BackingFormat string `json:"backing_format"`
}

// CreatePlan freezes the active images into a new checkpoint and puts new
// overlays on top of them. The host fills in FrozenMillis and FellBack
// before committing.
type CreatePlan struct {
	Checkpoint Checkpoint `json:"checkpoint"`
	Overlays   []Overlay  `json:"overlays"`
	// Resume: the host paused a running VM for the memory save and must
	// let it run again, also when it recovers from a crash.
	Resume bool `json:"resume,omitempty"`
}

// ApplyPlan puts new active overlays on a checkpoint's images; the old active
// overlays become garbage (save them as a checkpoint first to keep them).
type ApplyPlan struct {
	Checkpoint string    `json:"checkpoint"`
	Overlays   []Overlay `json:"overlays"`
	Remove     []string  `json:"remove"`
}

// Rebase makes Image absorb what it read through its old backing image and
// re-points it at Backing ("" = standalone): `qemu-img rebase` safe mode
// offline, block-stream live.
type Rebase struct {
	Disk          string `json:"disk"`
	Image         string `json:"image"`
	Backing       string `json:"backing"`
	BackingFormat string `json:"backing_format,omitempty"`
	// InUse: a running VM has Image open (active overlay or an ancestor of
	// it), so only QEMU may write it: use block-stream.
	InUse bool `json:"in_use,omitempty"`
}

// DeletePlan removes checkpoints without changing what any other checkpoint,
// or the VM, reads: first the rebases, then the files.
type DeletePlan struct {
	Checkpoints []string `json:"checkpoints"` // ids, the named one first
	Subtree     bool     `json:"subtree,omitempty"`
	Rebases     []Rebase `json:"rebases"`
	Remove      []string `json:"remove"`
}

func (t *Tree) idle() error {
	if t.Journal != nil {
		return fmt.Errorf("%w: a checkpoint %s is unfinished; the next checkpoint operation (or a restart of hvd) finishes or undoes it",
			errdefs.ErrConflict, t.Journal.Kind)
	}
	return nil
}

// PlanCreate plans a checkpoint of req.Disks.
func (t *Tree) PlanCreate(req CreateRequest) (CreatePlan, error) {
	if err := t.idle(); err != nil {
		return CreatePlan{}, err
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	if req.Type == "" {
		req.Type = Production
	}
	if !req.Type.valid() {
		return CreatePlan{}, fmt.Errorf("%w: type: %q is not a checkpoint type; use production or standard", errdefs.ErrInvalid, req.Type)
	}
	if req.Memory && req.Type != Standard {
		return CreatePlan{}, fmt.Errorf("%w: memory: only standard checkpoints keep memory; use --type standard", errdefs.ErrInvalid)
	}
	name := req.Name
	if name == "" {
		name = "checkpoint-" + req.Now.UTC().Format("20060102-150405")
		if t.checkNewName(name) != nil {
			name += "-" + newID()[:4]
		}
	}
	if err := t.checkNewName(name); err != nil {
		return CreatePlan{}, err
	}
	if err := t.checkDisks(req.Disks); err != nil {
		return CreatePlan{}, err
	}
	cp := Checkpoint{
		ID: t.newCheckpointID(), Name: name, Parent: t.Current, Type: req.Type, CreatedAt: req.Now.UTC(),
		Disks: map[string]string{}, Formats: map[string]string{}, Config: req.Config,
	}
	if req.Memory {
		cp.StateFile = "checkpoint-" + cp.ID[:8] + ".vmstate"
	}
	var plan CreatePlan
	taken := t.files()
	for _, d := range req.Disks {
		file, format := d.File, d.Format
		if a, ok := t.Active[d.Name]; ok {
			file, format = a, "qcow2" // active overlays are always ours
		}
		cp.Disks[d.Name], cp.Formats[d.Name] = file, format
		plan.Overlays = append(plan.Overlays, Overlay{Disk: d.Name, File: overlayName(d.Name, taken), Backing: file, BackingFormat: format})
	}
	plan.Checkpoint = cp
	return plan, nil
}

// checkDisks: every disk valid, and the tree's active overlays are the files
// the configuration names (they are written there after each operation).
func (t *Tree) checkDisks(disks []Disk) error {
	if len(disks) == 0 {
		return fmt.Errorf("%w: disks: the VM has none; add a disk before taking a checkpoint", errdefs.ErrInvalid)
	}
	seen := map[string]bool{}
	for _, d := range disks {
		if err := validate.Name("disk name", d.Name); err != nil {
			return err
		}
		switch {
		case seen[d.Name]:
			return fmt.Errorf("%w: disks: %q is listed twice; give each disk once", errdefs.ErrInvalid, d.Name)
		case !localFile(d.File):
			return fmt.Errorf("%w: disk %q: file %q must be a file name inside the VM's directory", errdefs.ErrInvalid, d.Name, d.File)
		case d.Format != "qcow2" && d.Format != "raw":
			return fmt.Errorf("%w: disk %q: format %q cannot take checkpoints; convert it to qcow2 or raw", errdefs.ErrInvalid, d.Name, d.Format)
		case t.Active[d.Name] != "" && t.Active[d.Name] != d.File:
			return fmt.Errorf("%w: disk %q: the configuration names %q but the checkpoint tree's active overlay is %q; let hvd recover the VM, then retry",
				errdefs.ErrConflict, d.Name, d.File, t.Active[d.Name])
		}
		seen[d.Name] = true
	}
	for d := range t.Active {
		if !seen[d] {
			return fmt.Errorf("%w: disk %q has checkpoints but is no longer in the VM; add it back, or delete the checkpoints first", errdefs.ErrConflict, d)
		}
	}
	return nil
}

// PlanApply plans going back to a checkpoint.
func (t *Tree) PlanApply(nameOrID string) (ApplyPlan, error) {
	if err := t.idle(); err != nil {
		return ApplyPlan{}, err
	}
	cp, err := t.Get(nameOrID)
	if err != nil {
		return ApplyPlan{}, err
	}
	plan := ApplyPlan{Checkpoint: cp.ID}
	taken := t.files()
	for _, d := range sortedKeys(cp.Disks) {
		plan.Overlays = append(plan.Overlays, Overlay{Disk: d, File: overlayName(d, taken), Backing: cp.Disks[d], BackingFormat: cp.Formats[d]})
	}
	for _, d := range sortedKeys(t.Active) {
		plan.Remove = append(plan.Remove, t.Active[d])
	}
	return plan, nil
}

// PlanDelete plans deleting a checkpoint, or it and all its descendants. The
// images that backed on a deleted one (its children's, or the active
// overlays) absorb its data and back on its parent's image instead; when it
// owned a base image they become standalone.
func (t *Tree) PlanDelete(nameOrID string, subtree bool) (DeletePlan, error) {
	if err := t.idle(); err != nil {
		return DeletePlan{}, err
	}
	cp, err := t.Get(nameOrID)
	if err != nil {
		return DeletePlan{}, err
	}
	plan := DeletePlan{Checkpoints: []string{cp.ID}, Subtree: subtree}
	if subtree {
		plan.Checkpoints = t.subtree(cp.ID)
	}
	gone := map[string]bool{}
	for _, id := range plan.Checkpoints {
		gone[id] = true
	}
	open := t.inRunningChain()
	rebase := func(d, image string) {
		if image == "" {
			return // the image does not exist for this disk
		}
		back, format := t.imageOf(cp.Parent, d)
		plan.Rebases = append(plan.Rebases, Rebase{Disk: d, Image: image, Backing: back, BackingFormat: format, InUse: open[image]})
	}
	if !subtree {
		for _, d := range sortedKeys(cp.Disks) {
			for _, child := range t.Children(cp.ID) {
				rebase(d, t.byID(child).Disks[d])
			}
		}
	}
	if gone[t.Current] {
		for _, d := range sortedKeys(t.Active) {
			rebase(d, t.Active[d])
		}
	}
	for _, id := range plan.Checkpoints {
		c := t.byID(id)
		for _, d := range sortedKeys(c.Disks) {
			plan.Remove = append(plan.Remove, c.Disks[d])
		}
		if c.StateFile != "" {
			plan.Remove = append(plan.Remove, c.StateFile)
		}
	}
	return plan, nil
}

// subtree lists id and its descendants, parents before children.
func (t *Tree) subtree(id string) []string {
	out := []string{id}
	for i := 0; i < len(out); i++ {
		out = append(out, t.Children(out[i])...)
	}
	return out
}

// files is every file the tree references, so a new name never reuses one.
func (t *Tree) files() map[string]bool {
	out := map[string]bool{}
	for _, c := range t.Checkpoints {
		for _, f := range c.Disks {
			out[f] = true
		}
		out[c.StateFile] = true
	}
	for _, f := range t.Active {
		out[f] = true
	}
	return out
}

// overlayName names a new overlay "<disk>-<8 hex>.qcow2": a fresh name each
// time, so a file is never reused while a crashed operation may still list it.
func overlayName(disk string, taken map[string]bool) string {
	for {
		f := disk + "-" + newID()[:8] + ".qcow2"
		if !taken[f] {
			taken[f] = true
			return f
		}
	}
}

func (t *Tree) newCheckpointID() string {
	for {
		id := newID()
		if t.index(id) < 0 {
			return id
		}
	}
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
