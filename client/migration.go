package client

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// MoveVM starts moving a VM to another host (a peer of hvd's); when the
// operation succeeds, DecodeResult gives its api.MoveResult.
func (c *Client) MoveVM(ctx context.Context, name string, req api.VMMove) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(name, "/move"), req)
}

// MoveVMStorage starts moving a VM's files to another storage location of
// its host; the operation's result is an api.MoveStorageResult.
func (c *Client) MoveVMStorage(ctx context.Context, name string, req api.VMMoveStorage) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(name, "/move-storage"), req)
}

// The incoming-migration calls below are made by one hvd to another: the
// source host drives the target (see internal/feature/migration).

func migrationPath(id string, rest ...string) string {
	p := "/migrations/" + url.PathEscape(id)
	for _, r := range rest {
		p += r
	}
	return p
}

// CreateMigration announces a VM the calling host is about to send.
func (c *Client) CreateMigration(ctx context.Context, req api.MigrationCreate) (api.Migration, error) {
	var m api.Migration
	err := c.do(ctx, request{method: http.MethodPost, path: "/migrations", body: req, timeout: c.timeout}, &m)
	return m, err
}

// GetMigration reads an incoming migration's state. Not found means the
// target never committed it.
func (c *Client) GetMigration(ctx context.Context, id string) (api.Migration, error) {
	var m api.Migration
	err := c.do(ctx, request{method: http.MethodGet, path: migrationPath(id), timeout: c.timeout}, &m)
	return m, err
}

// PutMigrationFile sends one announced file of exactly size bytes; the
// transfer is bounded by ctx only.
func (c *Client) PutMigrationFile(ctx context.Context, id, name string, r io.Reader, size int64) error {
	req, err := c.newHTTPRequest(ctx, request{method: http.MethodPut, path: migrationPath(id, "/files/", url.PathEscape(name))})
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Body = http.NoBody
	if size > 0 {
		req.Body = io.NopCloser(io.LimitReader(r, size))
		req.Header.Set("Expect", "100-continue")
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.roundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// PrepareMigration has the target put the VM in place and, live, start its
// QEMU waiting; the answer says where to send the disks and the memory.
func (c *Client) PrepareMigration(ctx context.Context, id string) (api.Migration, error) {
	var m api.Migration
	err := c.do(ctx, request{method: http.MethodPost, path: migrationPath(id, "/prepare"), timeout: c.timeout}, &m)
	return m, err
}

// CommitMigration makes the target run the VM: the source sent everything
// and its guest is stopped.
func (c *Client) CommitMigration(ctx context.Context, id string, req api.MigrationCommit) (api.Migration, error) {
	var m api.Migration
	err := c.do(ctx, request{method: http.MethodPost, path: migrationPath(id, "/commit"), body: req, timeout: c.timeout}, &m)
	return m, err
}

// AbortMigration has the target drop everything of an uncommitted
// migration.
func (c *Client) AbortMigration(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: migrationPath(id), timeout: c.timeout}, nil)
}
