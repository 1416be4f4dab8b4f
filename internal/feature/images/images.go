// Package images is the API of the disk tools that work on image files by
// path, outside any VM (/1.0/disks: create, info, resize, convert). It sees
// VMs only to keep away from the images a running one holds, and hvd's store
// of VMs, which only the host writes.
package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/validate"
)

// Service is the disk tools' API (the httpapi Disks role).
type Service struct {
	h hostvm.Host
}

// New returns the disk tools' API of host h.
func New(h hostvm.Host) *Service { return &Service{h: h} }

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
func (f *Service) usedByRunningVM(path string) string {
	for _, v := range f.h.VMs() {
		if _, running := v.Session(); !running {
			continue
		}
		for _, d := range v.Config().Disks {
			if v.Path(d.File) == path {
				return v.Name()
			}
		}
	}
	return ""
}

// CreateDisk makes a new, empty disk image.
func (f *Service) CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error) {
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
	if err := f.h.Disk().Create(ctx, path, format, size); err != nil {
		return api.DiskInfo{}, err
	}
	i, err := f.h.Disk().Info(ctx, path)
	return toAPIDisk(i), err
}

// DiskInfo describes a disk image.
func (f *Service) DiskInfo(ctx context.Context, p string) (api.DiskInfo, error) {
	path, err := absPath("path", p)
	if err != nil {
		return api.DiskInfo{}, err
	}
	i, err := f.h.Disk().Info(ctx, path)
	return toAPIDisk(i), err
}

// ResizeDisk grows a disk image that no running VM uses.
func (f *Service) ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error) {
	path, err := absPath("path", req.Path)
	if err != nil {
		return api.DiskInfo{}, err
	}
	size, err := validate.ParseSize("size", req.Size)
	if err != nil {
		return api.DiskInfo{}, err
	}
	if vm := f.usedByRunningVM(path); vm != "" {
		return api.DiskInfo{}, fmt.Errorf("path: %s is a disk of running VM %s; stop the VM first: %w", path, vm, errdefs.ErrConflict)
	}
	if err := f.h.Disk().Resize(ctx, path, size); err != nil {
		return api.DiskInfo{}, err
	}
	f.h.ImagesChanged()
	i, err := f.h.Disk().Info(ctx, path)
	return toAPIDisk(i), err
}

// ConvertDisk converts (or imports) an image into a new file, as an operation with progress.
func (f *Service) ConvertDisk(ctx context.Context, req api.DiskConvert) (*operation.Op, error) {
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
	if _, err := f.h.Disk().Info(ctx, src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		return nil, fmt.Errorf("target: %s exists; choose a new file name: %w", dst, errdefs.ErrConflict)
	}
	if f.h.InStore(dst) {
		return nil, fmt.Errorf("target: %s is inside hv's VM store; write elsewhere: %w", dst, errdefs.ErrInvalid)
	}
	return f.h.Operations().Start("disk.convert", []string{"/1.0/disks"}, func(ctx context.Context, op *operation.Op) (any, error) {
		op.SetProgress("converting", 0, 100, "percent")
		err := f.h.Disk().Convert(ctx, src, dst, format, func(pct float64) {
			op.SetProgress("converting", uint64(pct), 100, "percent")
		})
		if err != nil {
			return nil, err
		}
		i, err := f.h.Disk().Info(ctx, dst)
		return toAPIDisk(i), err
	}), nil
}
