package disk

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/hvproject/hv/internal/errdefs"
)

// Info describes one image file, as qemu-img sees it.
type Info struct {
	Path          string
	Format        string // qcow2, raw, vmdk...: detected from the content, not the name
	VirtualBytes  uint64 // size the guest sees
	ActualBytes   uint64 // space used on the host
	BackingFile   string
	BackingFormat string
	Dirty         bool // not cleanly closed (lazy refcounts)
	Encrypted     bool
	Corrupt       bool // qcow2 marked itself corrupt; repair with qemu-img check -r all
	// Extents lists the files a multi-file image (VMDK) reads. Import refuses
	// images whose data lives in other files.
	Extents []string
	// DataFile is a qcow2 external data file, when it has one.
	DataFile string
	// Bitmaps are the qcow2 image's persistent dirty bitmaps.
	Bitmaps []Bitmap
}

// Bitmap is a persistent dirty bitmap stored in a qcow2 image.
type Bitmap struct {
	Name        string
	Granularity int64
	// InUse: a QEMU had the image open for writing and did not store the
	// bitmap when it let go (it crashed or was killed): its content cannot
	// be trusted.
	InUse bool
}

// imgInfo is the part of `qemu-img info --output=json` that hv reads.
type imgInfo struct {
	Filename       string `json:"filename"`
	Format         string `json:"format"`
	VirtualSize    uint64 `json:"virtual-size"`
	ActualSize     uint64 `json:"actual-size"`
	BackingFile    string `json:"backing-filename"`
	BackingFormat  string `json:"backing-filename-format"`
	Dirty          bool   `json:"dirty-flag"`
	Encrypted      bool   `json:"encrypted"`
	FormatSpecific struct {
		Type string `json:"type"`
		Data struct {
			Corrupt  bool   `json:"corrupt"`
			DataFile string `json:"data-file"`
			Bitmaps  []struct {
				Name        string   `json:"name"`
				Granularity int64    `json:"granularity"`
				Flags       []string `json:"flags"`
			} `json:"bitmaps"`
			Extents []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// Info inspects path with `qemu-img info -U`: -U (force share) reads images a
// running VM holds locked. qemu-img info does not open backing files.
func (t *Tool) Info(ctx context.Context, path string) (Info, error) {
	abs, err := existing("disk", path)
	if err != nil {
		return Info{}, err
	}
	out, err := t.run(ctx, infoTimeout, "info", "--output=json", "-U", abs)
	if err != nil {
		return Info{}, wrapImg(err, path, "read it as a disk image")
	}
	return parseInfo(path, out)
}

func parseInfo(path string, out []byte) (Info, error) {
	var ii imgInfo
	if err := json.Unmarshal(out, &ii); err != nil || ii.Format == "" {
		return Info{}, fmt.Errorf("%w: disk %q: cannot understand qemu-img info output (%v); check the qemu-utils installation",
			errdefs.ErrUnavailable, path, err)
	}
	info := Info{
		Path:          path,
		Format:        ii.Format,
		VirtualBytes:  ii.VirtualSize,
		ActualBytes:   ii.ActualSize,
		BackingFile:   ii.BackingFile,
		BackingFormat: ii.BackingFormat,
		Dirty:         ii.Dirty,
		Encrypted:     ii.Encrypted,
		Corrupt:       ii.FormatSpecific.Data.Corrupt,
		DataFile:      ii.FormatSpecific.Data.DataFile,
	}
	for _, b := range ii.FormatSpecific.Data.Bitmaps {
		info.Bitmaps = append(info.Bitmaps, Bitmap{Name: b.Name, Granularity: b.Granularity, InUse: slices.Contains(b.Flags, "in-use")})
	}
	for _, e := range ii.FormatSpecific.Data.Extents {
		info.Extents = append(info.Extents, e.Filename)
	}
	return info, nil
}
