package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/validate"
)

func absPath(field, p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%s: empty; give the path of a disk image: %w", field, errdefs.ErrInvalid)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s: %q is relative; hvd needs an absolute path (hv makes paths absolute for you): %w", field, p, errdefs.ErrInvalid)
	}
	return filepath.Clean(p), nil
}

func toAPIDisk(i disk.Info) api.DiskInfo {
	return api.DiskInfo{Path: i.Path, Format: i.Format, VirtualBytes: i.VirtualBytes, ActualBytes: i.ActualBytes,
		BackingFile: i.BackingFile, Dirty: i.Dirty, Encrypted: i.Encrypted}
}

// usedByRunningVM names the VM whose running QEMU has path open, if any: changing
// such a disk from outside would corrupt it.
func (s *Service) usedByRunningVM(path string) string {
	for _, v := range s.list() {
		v.mu.Lock()
		running := v.sess != nil
		disks := v.cfg.Disks
		v.mu.Unlock()
		if !running {
			continue
		}
		for _, d := range disks {
			if v.path(d.File) == path {
				return v.name
			}
		}
	}
	return ""
}

// CreateDisk makes a new, empty disk image.
func (s *Service) CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error) {
	path, err := absPath("path", req.Path)
	if err != nil {
		return api.DiskInfo{}, err
	}
	size, err := validate.ParseSize("size", req.Size)
	if err != nil {
		return api.DiskInfo{}, err
	}
	if size == 0 {
		return api.DiskInfo{}, fmt.Errorf("size: 0; give the disk's size, e.g. 10G: %w", errdefs.ErrInvalid)
	}
	format := req.Format
	if format == "" {
		format = "qcow2"
	}
	if format != "qcow2" && format != "raw" {
		return api.DiskInfo{}, fmt.Errorf("format: %q; use qcow2 or raw: %w", format, errdefs.ErrInvalid)
	}
	if err := s.disk.Create(ctx, path, format, size); err != nil {
		return api.DiskInfo{}, err
	}
	i, err := s.disk.Info(ctx, path)
	return toAPIDisk(i), err
}

// DiskInfo describes a disk image.
func (s *Service) DiskInfo(ctx context.Context, p string) (api.DiskInfo, error) {
	path, err := absPath("path", p)
	if err != nil {
		return api.DiskInfo{}, err
	}
	i, err := s.disk.Info(ctx, path)
	return toAPIDisk(i), err
}

// ResizeDisk grows a disk image that no running VM uses.
func (s *Service) ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error) {
	path, err := absPath("path", req.Path)
	if err != nil {
		return api.DiskInfo{}, err
	}
	size, err := validate.ParseSize("size", req.Size)
	if err != nil {
		return api.DiskInfo{}, err
	}
	if vm := s.usedByRunningVM(path); vm != "" {
		return api.DiskInfo{}, fmt.Errorf("path: %s is a disk of running VM %s; stop the VM first: %w", path, vm, errdefs.ErrConflict)
	}
	if err := s.disk.Resize(ctx, path, size); err != nil {
		return api.DiskInfo{}, err
	}
	for _, v := range s.list() {
		v.mu.Lock()
		v.diskSizesAt = time.Time{} // re-read at the next request
		v.mu.Unlock()
	}
	i, err := s.disk.Info(ctx, path)
	return toAPIDisk(i), err
}

// ConvertDisk converts (or imports) an image into a new file, as an operation with progress.
func (s *Service) ConvertDisk(ctx context.Context, req api.DiskConvert) (*operation.Op, error) {
	src, err := absPath("source", req.Source)
	if err != nil {
		return nil, err
	}
	dst, err := absPath("target", req.Target)
	if err != nil {
		return nil, err
	}
	format := req.Format
	if format == "" {
		format = "qcow2"
	}
	switch format {
	case "qcow2", "raw", "vmdk", "vhdx", "vpc":
	default:
		return nil, fmt.Errorf("format: %q; use qcow2, raw, vmdk, vhdx or vpc: %w", format, errdefs.ErrInvalid)
	}
	if _, err := s.disk.Info(ctx, src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		return nil, fmt.Errorf("target: %s exists; choose a new file name: %w", dst, errdefs.ErrConflict)
	}
	if strings.HasPrefix(dst, s.vmsDir+string(filepath.Separator)) {
		return nil, fmt.Errorf("target: %s is inside hv's VM store; write elsewhere: %w", dst, errdefs.ErrInvalid)
	}
	return s.ops.Start("disk.convert", []string{"/1.0/disks"}, func(ctx context.Context, op *operation.Op) (any, error) {
		op.SetProgress("converting", 0, 100, "percent")
		err := s.disk.Convert(ctx, src, dst, format, func(pct float64) {
			op.SetProgress("converting", uint64(pct), 100, "percent")
		})
		if err != nil {
			return nil, err
		}
		i, err := s.disk.Info(ctx, dst)
		return toAPIDisk(i), err
	}), nil
}
