package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/hvproject/hv/api"
)

// CreateBackup starts opening a backup of a VM; when the operation succeeds,
// DecodeResult gives the api.Backup: each disk's NBD socket and export, and
// whether only changed extents need reading.
func (c *Client) CreateBackup(ctx context.Context, vm string, req api.BackupCreate) (api.Operation, error) {
	return c.operation(ctx, http.MethodPost, vmPath(vm, "/backups"), req)
}

// ListBackups returns a VM's open backups (never nil).
func (c *Client) ListBackups(ctx context.Context, vm string) ([]api.Backup, error) {
	var out []api.Backup
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/backups"), timeout: c.timeout}, &out)
	if err == nil && out == nil {
		out = []api.Backup{}
	}
	return out, err
}

// GetBackup returns one open backup of a VM.
func (c *Client) GetBackup(ctx context.Context, vm, backup string) (api.Backup, error) {
	var out api.Backup
	err := c.do(ctx, request{method: http.MethodGet, path: backupPath(vm, backup), timeout: c.timeout}, &out)
	return out, err
}

// BackupChanges lists the extents of disk that changed since the backup's
// reference point (the dirty bitmap's extents, as NBD block status gives them).
func (c *Client) BackupChanges(ctx context.Context, vm, backup, disk string) ([]api.Extent, error) {
	var out []api.Extent
	err := c.do(ctx, request{method: http.MethodGet, path: backupPath(vm, backup) + "/disks/" + url.PathEscape(disk) + "/changes", timeout: c.timeout}, &out)
	if err == nil && out == nil {
		out = []api.Extent{}
	}
	return out, err
}

// FinishBackup ends a backup the tool has stored: its ID becomes a reference
// point, which it returns.
func (c *Client) FinishBackup(ctx context.Context, vm, backup string) (api.ReferencePoint, error) {
	var out api.ReferencePoint
	err := c.do(ctx, request{method: http.MethodPost, path: backupPath(vm, backup) + "/finish", timeout: c.timeout}, &out)
	return out, err
}

// AbortBackup ends a backup without a new reference point; the one it started
// from stays valid.
func (c *Client) AbortBackup(ctx context.Context, vm, backup string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: backupPath(vm, backup), timeout: c.timeout}, nil)
}

// Tracking returns a VM's change tracking: reference points and per-disk state.
func (c *Client) Tracking(ctx context.Context, vm string) (api.ChangeTracking, error) {
	var out api.ChangeTracking
	err := c.do(ctx, request{method: http.MethodGet, path: vmPath(vm, "/tracking"), timeout: c.timeout}, &out)
	return out, err
}

// DeleteReferencePoint stops tracking changes since a reference point.
func (c *Client) DeleteReferencePoint(ctx context.Context, vm, reference string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: vmPath(vm, "/tracking/", url.PathEscape(reference)), timeout: c.timeout}, nil)
}

// BackupFiles lists the files of the VM that an open backup serves beside
// its disks (its configuration, UEFI variables, kernel and initrd, those it
// has), never nil.
func (c *Client) BackupFiles(ctx context.Context, vm, backup string) ([]api.BackupFile, error) {
	var out []api.BackupFile
	err := c.do(ctx, request{method: http.MethodGet, path: backupPath(vm, backup) + "/files", timeout: c.timeout}, &out)
	if err == nil && out == nil {
		out = []api.BackupFile{}
	}
	return out, err
}

// BackupFile returns the bytes of one file an open backup serves (name is
// api.BackupFileConfig, ...), at most max bytes: a larger file is an error,
// as is an answer cut short. Only ctx bounds the transfer.
func (c *Client) BackupFile(ctx context.Context, vm, backup, name string, max int64) ([]byte, api.BackupFile, error) {
	resp, err := c.send(ctx, request{method: http.MethodGet, path: backupPath(vm, backup) + "/files/" + url.PathEscape(name)})
	if err != nil {
		return nil, api.BackupFile{}, err
	}
	defer resp.Body.Close()
	info := api.BackupFile{Name: name, File: resp.Header.Get("X-Hv-File"), Size: resp.ContentLength}
	if info.Size > max {
		return nil, info, fmt.Errorf("backup %s of VM %s: its %s file is %d bytes, more than the %d asked for", backup, vm, name, info.Size, max)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	switch {
	case err != nil:
		return nil, info, fmt.Errorf("backup %s of VM %s: reading its %s file: %w", backup, vm, name, err)
	case int64(len(data)) > max || info.Size >= 0 && int64(len(data)) != info.Size:
		return nil, info, fmt.Errorf("backup %s of VM %s: its %s file came with %d bytes, not the %d announced", backup, vm, name, len(data), info.Size)
	}
	info.Size = int64(len(data))
	return data, info, nil
}

func backupPath(vm, backup string) string {
	return vmPath(vm, "/backups/", url.PathEscape(backup))
}
