package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// Disk calls take host paths as hvd sees them: make them absolute first.

// CreateDisk creates an empty disk image.
func (c *Client) CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error) {
	var d api.DiskInfo
	err := c.do(ctx, request{method: http.MethodPost, path: "/disks", body: req, timeout: c.timeout}, &d)
	return d, err
}

// DiskInfo describes the disk image at path.
func (c *Client) DiskInfo(ctx context.Context, path string) (api.DiskInfo, error) {
	var d api.DiskInfo
	r := request{method: http.MethodGet, path: "/disks/info", query: url.Values{"path": {path}}, timeout: c.timeout}
	err := c.do(ctx, r, &d)
	return d, err
}

// ResizeDisk grows a disk image to an absolute size.
func (c *Client) ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error) {
	var d api.DiskInfo
	err := c.do(ctx, request{method: http.MethodPost, path: "/disks/resize", body: req, timeout: c.timeout}, &d)
	return d, err
}

// ConvertDisk starts converting a disk image; the operation's progress is in percent and
// its result an api.DiskInfo of the target.
func (c *Client) ConvertDisk(ctx context.Context, req api.DiskConvert) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, "/disks/convert", req)
}
