// Package transfer exports a VM into a self-contained directory and imports
// such a directory as a new VM (Hyper-V's Export-VM and Import-VM). It sees
// VMs only through the host's contract (hostvm), and the VM's checkpoints
// through Checkpoints.
//
// An export is a VM's directory as hv keeps it, self-contained: config.json,
// checkpoints.json, the disks with their chains (relative backing names),
// state files, NVRAM, kernel and initrd. Import is the reverse: it checks the
// directory as hvd's recovery would, and has the host adopt it as a new VM.
package transfer

import (
	"context"
	"fmt"

	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
)

// Checkpoints is what an export asks of the VM's checkpoints (the host's
// checkpoint service plays it). Calls that take an op run with the VM's
// lock held.
type Checkpoints interface {
	// Tree reads the VM's checkpoint tree.
	Tree(v hostvm.VM) (*checkpoint.Tree, error)
	// TakeTemporary takes a checkpoint named name of a running VM, without
	// memory (production, falling back to crash-consistent): its images
	// hold the disks as they were, for a copy while the VM runs on.
	TakeTemporary(ctx context.Context, op *operation.Op, v hostvm.VM, name string) (id string, err error)
	// Delete deletes checkpoint id alone; its data merges into its child or
	// the running disks.
	Delete(ctx context.Context, op *operation.Op, v hostvm.VM, id string) error
}

// Service is the export and import API (the httpapi Transfers role).
type Service struct {
	h       hostvm.Host
	cp      Checkpoints
	tracker blockops.Tracker
}

// New returns the export and import API of host h.
func New(h hostvm.Host, cp Checkpoints) *Service {
	return &Service{h: h, cp: cp, tracker: blockops.Tracker{Tool: h.Disk(), Log: h.Log()}}
}

// wrap keeps the kind of err (for the HTTP code) while adding context.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}
