package host

import (
	"context"
	"fmt"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
)

var errTODO = fmt.Errorf("not implemented yet: %w", errdefs.ErrUnavailable)

// ListCheckpoints returns a VM's checkpoints, parents before children.
func (s *Service) ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error) {
	return nil, errTODO
}

// GetCheckpoint returns one checkpoint by name or id.
func (s *Service) GetCheckpoint(ctx context.Context, name, checkpoint string) (api.Checkpoint, error) {
	return api.Checkpoint{}, errTODO
}

// CreateCheckpoint takes a checkpoint; the operation's result is the api.Checkpoint.
func (s *Service) CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error) {
	return nil, errTODO
}

// ApplyCheckpoint goes back to a checkpoint; the operation's result is the api.VM.
func (s *Service) ApplyCheckpoint(name, checkpoint string, req api.CheckpointApply) (*operation.Op, error) {
	return nil, errTODO
}

// DeleteCheckpoint deletes a checkpoint (and its descendants with subtree),
// merging its data while the VM runs; the operation has no result.
func (s *Service) DeleteCheckpoint(name, checkpoint string, subtree bool) (*operation.Op, error) {
	return nil, errTODO
}

// RenameCheckpoint renames a checkpoint.
func (s *Service) RenameCheckpoint(ctx context.Context, name, checkpoint string, req api.CheckpointRename) (api.Checkpoint, error) {
	return api.Checkpoint{}, errTODO
}

// ExportVM writes a self-contained copy of a VM into a new directory; the
// operation's result is the api.VM exported.
func (s *Service) ExportVM(name string, req api.VMExport) (*operation.Op, error) {
	return nil, errTODO
}

// ImportVM makes a VM from an export; the operation's result is the new api.VM.
func (s *Service) ImportVM(req api.VMImport) (*operation.Op, error) {
	return nil, errTODO
}
