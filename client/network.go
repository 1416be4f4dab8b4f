package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// AddNIC starts adding a network adapter to a VM, connected to a switch.
func (c *Client) AddNIC(ctx context.Context, vm string, req api.NICAdd) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(vm, "/nics"), req)
}

// RemoveNIC starts removing a VM's network adapter.
func (c *Client) RemoveNIC(ctx context.Context, vm, nic string) (api.Operation, error) {
	return c.operation(ctx, http.MethodDelete, vmPath(vm, "/nics/", url.PathEscape(nic)), nil)
}

// AddDisk starts adding a data disk to a VM: a copy of an existing image (req.Path, an
// absolute host path) or a new empty one (req.Size).
func (c *Client) AddDisk(ctx context.Context, vm string, req api.DiskAdd) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(vm, "/disks"), req)
}

// RemoveDisk starts removing a VM's data disk (and its image in the VM's directory).
func (c *Client) RemoveDisk(ctx context.Context, vm, disk string) (api.Operation, error) {
	return c.operation(ctx, http.MethodDelete, vmPath(vm, "/disks/", url.PathEscape(disk)), nil)
}

// ListSwitches returns the host's virtual switches.
func (c *Client) ListSwitches(ctx context.Context) ([]api.Switch, error) {
	var out []api.Switch
	err := c.do(ctx, request{method: http.MethodGet, path: "/switches", timeout: c.timeout}, &out)
	return out, err
}

// GetSwitch returns one virtual switch; IsNotFound(err) when there is none of that name.
func (c *Client) GetSwitch(ctx context.Context, name string) (api.Switch, error) {
	var out api.Switch
	err := c.do(ctx, request{method: http.MethodGet, path: switchPath(name), timeout: c.timeout}, &out)
	return out, err
}

// CreateSwitch creates a virtual switch (external, internal or private).
func (c *Client) CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	var out api.Switch
	err := c.do(ctx, request{method: http.MethodPost, path: "/switches", body: req, timeout: c.timeout}, &out)
	return out, err
}

// DeleteSwitch deletes a virtual switch; hvd refuses (409) while NICs use it.
func (c *Client) DeleteSwitch(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: switchPath(name), timeout: c.timeout}, nil)
}

func switchPath(name string) string { return "/switches/" + url.PathEscape(name) }
