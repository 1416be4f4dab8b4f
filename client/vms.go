package client

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
)

// HostInfo describes the host hvd runs on.
func (c *Client) HostInfo(ctx context.Context) (api.HostInfo, error) {
	var h api.HostInfo
	err := c.do(ctx, request{method: http.MethodGet, path: "/host", timeout: c.timeout}, &h)
	return h, err
}

// RefreshHost asks hvd to probe the accelerator again and returns the host.
func (c *Client) RefreshHost(ctx context.Context) (api.HostInfo, error) {
	var h api.HostInfo
	err := c.do(ctx, request{method: http.MethodPost, path: "/host/refresh", timeout: c.timeout}, &h)
	return h, err
}

// ListVMs returns every VM of the host.
func (c *Client) ListVMs(ctx context.Context) ([]api.VM, error) {
	var vms []api.VM
	err := c.do(ctx, request{method: http.MethodGet, path: "/vms", timeout: c.timeout}, &vms)
	return vms, err
}

// GetVM returns one VM; IsNotFound(err) when there is none of that name.
func (c *Client) GetVM(ctx context.Context, name string) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(name), timeout: c.timeout}, &vm)
	return vm, err
}

// CreateVM starts creating a VM; the operation's resources name it.
func (c *Client) CreateVM(ctx context.Context, req api.VMCreate) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, "/vms", req)
}

// UpdateVM changes the fields set in upd and returns the VM as it is now.
func (c *Client) UpdateVM(ctx context.Context, name string, upd api.VMUpdate) (api.VM, error) {
	var vm api.VM
	err := c.do(ctx, request{method: http.MethodPatch, path: vmPath(name), body: upd, timeout: c.timeout}, &vm)
	return vm, err
}

// DeleteVM starts deleting a VM and its directory.
func (c *Client) DeleteVM(ctx context.Context, name string) (api.Operation, error) {
	return c.operation(ctx, http.MethodDelete, vmPath(name), nil)
}

// ChangeState starts a state change (start, stop, kill, pause, resume, save).
func (c *Client) ChangeState(ctx context.Context, name string, put api.VMStatePut) (api.Operation, error) {
	return c.operation(ctx, http.MethodPut, vmPath(name, "/state"), put)
}

// Exec starts a command in the guest through its agent; when the operation succeeds,
// DecodeResult gives its api.ExecResult.
func (c *Client) Exec(ctx context.Context, name string, req api.ExecRequest) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(name, "/exec"), req)
}

// operation sends a call that answers with an operation (202).
func (c *Client) operation(ctx context.Context, method, path string, body any) (api.Operation, error) {
	var op api.Operation
	err := c.do(ctx, request{method: method, path: path, body: body, timeout: c.timeout}, &op)
	return op, err
}
