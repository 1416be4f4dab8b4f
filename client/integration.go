package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// Integration returns the VM's integration services (Hyper-V's names: heartbeat,
// shutdown, time-sync, data-exchange, guest-services, direct-session, backup), each with
// its setting and what the guest agent last said.
func (c *Client) Integration(ctx context.Context, vm string) ([]api.IntegrationService, error) {
	var out []api.IntegrationService
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/integration"), timeout: c.timeout}, &out)
	return out, err
}

// UpdateIntegration enables and disables services and returns them all as they are now.
func (c *Client) UpdateIntegration(ctx context.Context, vm string, upd api.IntegrationUpdate) ([]api.IntegrationService, error) {
	var out []api.IntegrationService
	r := request{method: http.MethodPatch, path: vmPath(vm, "/integration"), body: upd, timeout: c.timeout}
	err := c.do(ctx, r, &out)
	return out, err
}

// kvpAnswer is the body of GET /1.0/vms/{name}/kvp.
type kvpAnswer struct {
	Host  map[string]string `json:"host"`
	Guest *api.GuestInfo    `json:"guest,omitempty"`
}

// KVP returns the data exchange of a VM: the pairs the host set (never nil), and what the
// guest reports about itself (nil until its agent has reported).
func (c *Client) KVP(ctx context.Context, vm string) (map[string]string, *api.GuestInfo, error) {
	var a kvpAnswer
	if err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/kvp"), timeout: c.timeout}, &a); err != nil {
		return nil, nil, err
	}
	if a.Host == nil {
		a.Host = map[string]string{}
	}
	return a.Host, a.Guest, nil
}

// SetKVP sets a host pair that the guest can read.
func (c *Client) SetKVP(ctx context.Context, vm, key, value string) error {
	r := request{method: http.MethodPut, path: kvpPath(vm, key), body: api.KVPPut{Value: value}, timeout: c.timeout}
	return c.do(ctx, r, nil)
}

// DeleteKVP removes a host pair.
func (c *Client) DeleteKVP(ctx context.Context, vm, key string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: kvpPath(vm, key), timeout: c.timeout}, nil)
}

func kvpPath(vm, key string) string { return vmPath(vm, "/kvp/", url.PathEscape(key)) }

// TimeSync sets the guest's clock to the host's and says how far off it was.
func (c *Client) TimeSync(ctx context.Context, vm string) (api.TimeSyncResult, error) {
	var out api.TimeSyncResult
	err := c.do(ctx, request{method: http.MethodPost, path: vmPath(vm, "/time-sync"), timeout: c.timeout}, &out)
	return out, err
}

// FreezeStatus says whether the guest's file systems are frozen.
func (c *Client) FreezeStatus(ctx context.Context, vm string) (api.FreezeStatus, error) {
	var out api.FreezeStatus
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/freeze"), timeout: c.timeout}, &out)
	return out, err
}

// Freeze freezes the guest's file systems (for a consistent backup) for at most
// req.Timeout seconds: hvd thaws them then if Thaw has not come first.
func (c *Client) Freeze(ctx context.Context, vm string, req api.FreezeRequest) (api.FreezeStatus, error) {
	var out api.FreezeStatus
	r := request{method: http.MethodPost, path: vmPath(vm, "/freeze"), body: req, timeout: c.timeout}
	err := c.do(ctx, r, &out)
	return out, err
}

// Thaw thaws the guest's file systems.
func (c *Client) Thaw(ctx context.Context, vm string) (api.FreezeStatus, error) {
	var out api.FreezeStatus
	err := c.do(ctx, request{method: http.MethodPost, path: vmPath(vm, "/thaw"), timeout: c.timeout}, &out)
	return out, err
}
