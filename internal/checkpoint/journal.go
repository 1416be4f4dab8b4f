package checkpoint

import (
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Kind is the operation a journal records.
type Kind string

const (
	KindCreate Kind = "create"
	KindApply  Kind = "apply"
	KindDelete Kind = "delete"
)

// Step is how far an operation got. The host saves the tree after each step,
// before the next action, so Recover knows which way to go.
type Step string

const (
	// StepBegun: the plan is recorded; new files may exist, half made or
	// whole, but nothing uses them yet, so create and apply roll back.
	StepBegun Step = "begun"
	// StepSwitched is saved before the VM is pointed at the new overlays
	// (a QMP transaction live): the guest may write to them from here, so
	// create and apply roll forward.
	StepSwitched Step = "switched"
	// StepStateSaved: create's memory state file is complete.
	StepStateSaved Step = "state-saved"
	// StepCommitted: the tree holds the result; only Remove is left to do.
	StepCommitted Step = "committed"
)

var stepOrder = map[Step]int{StepBegun: 0, StepSwitched: 1, StepStateSaved: 2, StepCommitted: 3}

// Journal records the operation under way inside the tree's file, so that one
// atomic write holds both the tree and how far the operation got.
type Journal struct {
	Kind      Kind        `json:"kind"`
	Step      Step        `json:"step"`
	StartedAt time.Time   `json:"started_at"`
	Create    *CreatePlan `json:"create,omitempty"`
	Apply     *ApplyPlan  `json:"apply,omitempty"`
	Delete    *DeletePlan `json:"delete,omitempty"`
	// Remove lists the files left to delete once committed.
	Remove []string `json:"remove,omitempty"`
}

func (j *Journal) reached(s Step) bool { return stepOrder[j.Step] >= stepOrder[s] }

// BeginCreate, BeginApply and BeginDelete record a plan as the operation under
// way; save the tree before touching any file.
func (t *Tree) BeginCreate(p CreatePlan) error {
	return t.begin(&Journal{Kind: KindCreate, Create: &p})
}

func (t *Tree) BeginApply(p ApplyPlan) error { return t.begin(&Journal{Kind: KindApply, Apply: &p}) }

func (t *Tree) BeginDelete(p DeletePlan) error {
	return t.begin(&Journal{Kind: KindDelete, Delete: &p})
}

func (t *Tree) begin(j *Journal) error {
	if err := t.idle(); err != nil {
		return err
	}
	j.Step, j.StartedAt = StepBegun, time.Now().UTC()
	t.Journal = j
	return nil
}

// Advance moves the operation under way to step; save the tree afterwards.
func (t *Tree) Advance(s Step) error {
	if t.Journal == nil || stepOrder[s] < stepOrder[t.Journal.Step] || s == StepCommitted {
		return fmt.Errorf("%w: step %q does not follow the journal's state; this is a bug in the caller", errdefs.ErrConflict, s)
	}
	t.Journal.Step = s
	return nil
}

// Commit applies the journaled plan to the tree. Files the result no longer
// references stay listed in the journal (StepCommitted); delete them, then
// call Done and save. With none, the journal is cleared at once.
func (t *Tree) Commit() error {
	j := t.Journal
	if j == nil || j.Step == StepCommitted {
		return fmt.Errorf("%w: nothing to commit; this is a bug in the caller", errdefs.ErrConflict)
	}
	var remove []string
	switch j.Kind {
	case KindCreate:
		cp := j.Create.Checkpoint
		if cp.StateFile != "" && !j.reached(StepStateSaved) {
			// The memory save did not finish: keep the disks, which
			// are consistent, and boot cold when it is applied.
			remove, cp.StateFile = append(remove, cp.StateFile), ""
		}
		t.Checkpoints = append(t.Checkpoints, cp)
		t.Current, t.Active = cp.ID, overlayFiles(j.Create.Overlays)
	case KindApply:
		t.Current, t.Active = j.Apply.Checkpoint, overlayFiles(j.Apply.Overlays)
		remove = j.Apply.Remove
	case KindDelete:
		t.commitDelete(j.Delete)
		remove = j.Delete.Remove
	}
	t.Journal = nil
	if len(remove) > 0 {
		t.Journal = &Journal{Kind: j.Kind, Step: StepCommitted, StartedAt: j.StartedAt, Remove: remove}
	}
	return nil
}

// Done clears a committed journal once its files are gone.
func (t *Tree) Done() { t.Journal = nil }

func (t *Tree) commitDelete(p *DeletePlan) {
	gone := map[string]bool{}
	for _, id := range p.Checkpoints {
		gone[id] = true
	}
	parent := t.byID(p.Checkpoints[0]).Parent
	if gone[t.Current] {
		t.Current = parent
	}
	kept := t.Checkpoints[:0]
	for _, c := range t.Checkpoints {
		if gone[c.ID] {
			continue
		}
		if gone[c.Parent] {
			c.Parent = parent
		}
		kept = append(kept, c)
	}
	t.Checkpoints = kept
}

func overlayFiles(ovs []Overlay) map[string]string {
	m := map[string]string{}
	for _, o := range ovs {
		m[o.Disk] = o.File
	}
	return m
}
