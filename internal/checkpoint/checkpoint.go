// Package checkpoint keeps a VM's checkpoint tree, Hyper-V's checkpoints built
// on qcow2 overlays (its AVHDX). Each checkpoint owns, per disk, the image that
// holds the changes since its parent; the VM runs on "active" overlays that back
// on the images of the current checkpoint. Changes are planned as pure data
// (which files to create, rebase, delete), journaled, and carried out either
// live by the host (QMP) or offline here (qemu-img); Recover finishes or undoes
// an operation a crash cut short.
//
// A Tree is not safe for concurrent use: the host holds the VM's lock.
package checkpoint

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/validate"
)

// Type is how a checkpoint was taken.
type Type string

const (
	// Production: the guest flushed and froze its file systems; no memory.
	// Applying it boots the VM cold.
	Production Type = "production"
	// Standard: disks plus memory and device state; applying it resumes the VM.
	Standard Type = "standard"
)

func (t Type) valid() bool { return t == Production || t == Standard }

// Checkpoint is one node of the tree. File names are relative to the VM's
// directory, so that the directory can move (export, import).
type Checkpoint struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Parent    string    `json:"parent,omitempty"` // "" for a root
	Type      Type      `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	// Disks maps a disk's name to the image this checkpoint owns: the changes
	// since the parent, or the whole base for a disk the parent lacks.
	Disks map[string]string `json:"disks"`
	// Formats maps a disk's name to its image's format. Only base images can
	// be raw; it is recorded because probing a raw image's format is unsafe.
	Formats map[string]string `json:"formats"`
	// StateFile holds memory and device state (standard checkpoints of a
	// running VM); "" means applying it boots the VM cold.
	StateFile string `json:"state_file,omitempty"`
	// Config is the VM's vmconfig.Config when the checkpoint was taken.
	Config       json.RawMessage `json:"config,omitempty"`
	FrozenMillis int64           `json:"frozen_ms,omitempty"` // production: how long the guest was frozen
	FellBack     bool            `json:"fell_back,omitempty"` // production was asked, the guest could not freeze
	// FallbackReason says why the guest could not freeze.
	FallbackReason string `json:"fallback_reason,omitempty"`
	// Machine is the host's record of the machine layout the state file
	// needs (memory layout, ports, uptime); opaque here.
	Machine   json.RawMessage `json:"machine,omitempty"`
	SizeBytes uint64          `json:"size_bytes"` // host space of its images and state file
}

// Tree is a VM's checkpoints and where "Now" hangs.
type Tree struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
	// Current is the checkpoint last created or applied: the active overlays
	// back on its images. "" when there are no checkpoints.
	Current string `json:"current,omitempty"`
	// Active maps a disk's name to the overlay the VM writes to. The host
	// writes these into the VM's configuration after every operation.
	Active map[string]string `json:"active,omitempty"`
	// Journal is the operation under way; nil when none.
	Journal *Journal `json:"journal,omitempty"`
}

// index returns the position of the checkpoint with id, or -1.
func (t *Tree) index(id string) int {
	for i := range t.Checkpoints {
		if t.Checkpoints[i].ID == id {
			return i
		}
	}
	return -1
}

func (t *Tree) byID(id string) *Checkpoint {
	if i := t.index(id); i >= 0 {
		return &t.Checkpoints[i]
	}
	return nil
}

// Get finds a checkpoint by name, or else by id.
func (t *Tree) Get(nameOrID string) (*Checkpoint, error) {
	for i := range t.Checkpoints {
		if t.Checkpoints[i].Name == nameOrID {
			return &t.Checkpoints[i], nil
		}
	}
	if c := t.byID(nameOrID); c != nil {
		return c, nil
	}
	return nil, errdefs.WithHint(fmt.Errorf("%w: checkpoint %q does not exist", errdefs.ErrNotFound, nameOrID), "see the VM's checkpoints for their names")
}

// Children returns the ids of id's children, in creation order.
func (t *Tree) Children(id string) []string {
	var out []string
	for _, c := range t.Checkpoints {
		if c.Parent == id {
			out = append(out, c.ID)
		}
	}
	return out
}

// Rename gives a checkpoint a new name, unique within the VM.
func (t *Tree) Rename(oldName, newName string) error {
	c, err := t.Get(oldName)
	if err != nil {
		return err
	}
	if err := t.checkNewName(newName); err != nil {
		return err
	}
	c.Name = newName
	return nil
}

func (t *Tree) checkNewName(name string) error {
	if err := validate.Name("name", name); err != nil {
		return err
	}
	for _, c := range t.Checkpoints {
		if c.Name == name {
			return fmt.Errorf("%w: name: checkpoint %q exists already; choose another name or rename that one first", errdefs.ErrConflict, name)
		}
	}
	return nil
}

// imageOf is the image a checkpoint owns for disk, or "" (no checkpoint, or
// the disk came later).
func (t *Tree) imageOf(id, disk string) (file, format string) {
	if c := t.byID(id); c != nil {
		return c.Disks[disk], c.Formats[disk]
	}
	return "", ""
}

// Image is one image file of a disk's chain, relative to the VM's directory.
type Image struct {
	File   string
	Format string
}

// Chain returns the images the active overlay of disk backs on, nearest
// first: the current checkpoint's image, then its parent's, down to the first
// checkpoint that holds the disk. Nil when the disk has no active overlay.
func (t *Tree) Chain(disk string) []Image {
	if t.Active[disk] == "" {
		return nil
	}
	var out []Image
	for id, n := t.Current, 0; id != "" && n <= len(t.Checkpoints); n++ {
		c := t.byID(id)
		if c == nil || c.Disks[disk] == "" {
			break
		}
		out = append(out, Image{File: c.Disks[disk], Format: c.Formats[disk]})
		id = c.Parent
	}
	return out
}

// HasDisk reports whether any checkpoint holds disk.
func (t *Tree) HasDisk(disk string) bool {
	for _, c := range t.Checkpoints {
		if c.Disks[disk] != "" {
			return true
		}
	}
	return false
}

// inRunningChain lists the images a running VM has open: those of the current
// checkpoint and its ancestors, and the active overlays.
func (t *Tree) inRunningChain() map[string]bool {
	open := map[string]bool{}
	for _, f := range t.Active {
		open[f] = true
	}
	for id, n := t.Current, 0; id != "" && n <= len(t.Checkpoints); n++ {
		c := t.byID(id)
		if c == nil {
			break
		}
		for _, f := range c.Disks {
			open[f] = true
		}
		id = c.Parent
	}
	return open
}
