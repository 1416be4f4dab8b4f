package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// ListCheckpoints returns a VM's checkpoints, parents before children (never nil). The one
// with Current set is where the VM's disks now back on.
func (c *Client) ListCheckpoints(ctx context.Context, vm string) ([]api.Checkpoint, error) {
	var out []api.Checkpoint
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/checkpoints"), timeout: c.timeout}, &out)
	if err == nil && out == nil {
		out = []api.Checkpoint{}
	}
	return out, err
}

// GetCheckpoint returns one checkpoint of a VM, by name or id; IsNotFound(err) when the VM
// has none such.
func (c *Client) GetCheckpoint(ctx context.Context, vm, checkpoint string) (api.Checkpoint, error) {
	var out api.Checkpoint
	err := c.do(ctx, request{method: http.MethodGet, path: checkpointPath(vm, checkpoint), timeout: c.timeout}, &out)
	return out, err
}

// CreateCheckpoint starts taking a checkpoint; when the operation succeeds, DecodeResult
// gives the new api.Checkpoint (FellBack says a production checkpoint became standard).
func (c *Client) CreateCheckpoint(ctx context.Context, vm string, req api.CheckpointCreate) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(vm, "/checkpoints"), req)
}

// ApplyCheckpoint starts putting a VM back to a checkpoint; the operation's result is the
// api.VM (Off after a production checkpoint, Running or Paused after a standard one).
func (c *Client) ApplyCheckpoint(ctx context.Context, vm, checkpoint string, req api.CheckpointApply) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, checkpointPath(vm, checkpoint)+"/apply", req)
}

// DeleteCheckpoint starts deleting a checkpoint, and with subtree its descendants too; its
// data merges into the images that read it, also while the VM runs. No result.
func (c *Client) DeleteCheckpoint(ctx context.Context, vm, checkpoint string, subtree bool) (api.Operation, error) {
	r := request{method: http.MethodDelete, path: checkpointPath(vm, checkpoint), timeout: c.timeout}
	if subtree {
		r.query = url.Values{"subtree": {"true"}}
	}
	var op api.Operation
	err := c.do(ctx, r, &op)
	return op, err
}

// RenameCheckpoint gives a checkpoint a new name and returns it as it is now.
func (c *Client) RenameCheckpoint(ctx context.Context, vm, checkpoint, newName string) (api.Checkpoint, error) {
	var out api.Checkpoint
	r := request{method: http.MethodPatch, path: checkpointPath(vm, checkpoint), body: api.CheckpointRename{Name: newName}, timeout: c.timeout}
	err := c.do(ctx, r, &out)
	return out, err
}

// ExportVM starts writing a self-contained copy of a VM into req.Dir (an absolute host
// path that must not exist); the operation's result is the api.VM exported.
func (c *Client) ExportVM(ctx context.Context, vm string, req api.VMExport) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(vm, "/export"), req)
}

// ImportVM starts making a VM from an export (req.Dir, an absolute host path); the
// operation's resources name the new VM and its result is the api.VM.
func (c *Client) ImportVM(ctx context.Context, req api.VMImport) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, "/imports", req)
}

func checkpointPath(vm, checkpoint string) string {
	return vmPath(vm, "/checkpoints/", url.PathEscape(checkpoint))
}
