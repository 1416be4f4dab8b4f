// Package tracking keeps a VM's change-tracking record (Hyper-V's resilient
// change tracking): the reference points its disks' persistent dirty bitmaps
// count changes from, a stamp of each disk image as hv last let go of it, why
// tracking was lost for a disk, and the backup in progress. The bitmaps
// themselves live in the qcow2 images; this record says which of them can be
// trusted.
package tracking

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/sealed"
)

// FileName is the record's file in the VM's directory.
const FileName = "tracking.json"

// KeepReferences is how many reference points a VM keeps: enough for two
// backup tools (hv's own and a third party's) taking turns, each bitmap costs
// one bit per 64 KiB of disk.
const KeepReferences = 4

// bitmapPrefix names the persistent bitmaps of reference points; tempPrefix
// the frozen copies an open backup exports.
const (
	bitmapPrefix = "hv-rct-"
	tempPrefix   = "hv-backup-"
)

var format = sealed.Format{VersionKey: "tracking_version", BodyKey: "tracking", Version: 1}

// State is a VM's change-tracking record.
type State struct {
	// References are the reference points, oldest first.
	References []Reference `json:"references"`
	// Stamps hold each disk's active image as hv last let go of it (QEMU
	// exited, an offline operation ended). A disk has none while a QEMU of hv
	// has it open: a stamp that is missing or differs when hv opens the disk
	// again means someone else may have written it.
	Stamps map[string]Stamp `json:"stamps,omitempty"`
	// Lost says, per disk, why changes since the reference points are not
	// known; the next backup reads the disk whole and reports it.
	Lost map[string]string `json:"lost,omitempty"`
	// Open is the backup in progress.
	Open *Open `json:"open,omitempty"`
}

// Reference is a reference point: changes are tracked since Time for Disks,
// each in its bitmap BitmapName(ID).
type Reference struct {
	ID          string    `json:"id"`
	Time        time.Time `json:"time"`
	Consistency string    `json:"consistency"`
	Disks       []string  `json:"disks"`
}

// Stamp identifies the content of an image file without reading it.
type Stamp struct {
	File    string `json:"file"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
}

// Open is a backup in progress: what clients see, and what hv must undo when
// the backup ends or hvd restarts.
type Open struct {
	Backup api.Backup `json:"backup"`
	// Files are temporary files (fleecing overlays) to delete at the end.
	Files []string `json:"files,omitempty"`
	// PIDs are NBD servers hv started for an Off VM.
	PIDs []int `json:"pids,omitempty"`
	// Nodes are the block nodes, jobs and exports added to a running QEMU,
	// by disk.
	Nodes map[string]string `json:"nodes,omitempty"`
}

// BitmapName is the persistent bitmap of reference point id.
func BitmapName(id string) string { return bitmapPrefix + id }

// TempBitmapName is the frozen bitmap open backup id exports.
func TempBitmapName(id string) string { return tempPrefix + id }

// IsOurs reports whether a bitmap's name is one hv manages.
func IsOurs(name string) bool {
	return strings.HasPrefix(name, bitmapPrefix) || strings.HasPrefix(name, tempPrefix)
}

// ReferenceOf returns the reference point of a bitmap name, "" for others.
func ReferenceOf(bitmap string) string {
	id, ok := strings.CutPrefix(bitmap, bitmapPrefix)
	if !ok {
		return ""
	}
	return id
}

// Load reads the record in dir; a VM without one has an empty record.
func Load(dir string) (*State, error) {
	path := filepath.Join(dir, FileName)
	_, body, found, err := format.ReadOptional(path)
	switch {
	case errors.Is(err, sealed.ErrTooNew) || errors.Is(err, errdefs.ErrUnavailable):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w; or remove %s to start change tracking afresh (the next backup of each disk is full)", err, path)
	case !found:
		return &State{}, nil
	}
	var s State
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("%s: %v; remove it to start change tracking afresh: %w", path, err, errdefs.ErrInvalid)
	}
	return &s, nil
}

// Marshal is the record as Save writes it (to send it to another host).
func (s *State) Marshal() ([]byte, error) { return format.Marshal(s) }

// Save writes the record into dir durably.
func (s *State) Save(dir string) error {
	return format.Write(filepath.Join(dir, FileName), s)
}

// Reference returns reference point id, or nil.
func (s *State) Reference(id string) *Reference {
	for i := range s.References {
		if s.References[i].ID == id {
			return &s.References[i]
		}
	}
	return nil
}

// Covers reports whether changes to disk are tracked since reference id.
func (s *State) Covers(id, disk string) bool {
	r := s.Reference(id)
	return r != nil && slices.Contains(r.Disks, disk)
}

// Bitmaps returns the bitmaps disk's active image must carry.
func (s *State) Bitmaps(disk string) []string {
	var out []string
	for _, r := range s.References {
		if slices.Contains(r.Disks, disk) {
			out = append(out, BitmapName(r.ID))
		}
	}
	return out
}

// Lose records that disk's changes since every reference point are unknown,
// and why. The caller removes the disk's bitmaps.
func (s *State) Lose(disk, reason string) {
	for i := range s.References {
		s.References[i].Disks = slices.DeleteFunc(s.References[i].Disks, func(d string) bool { return d == disk })
	}
	if s.Lost == nil {
		s.Lost = map[string]string{}
	}
	s.Lost[disk] = reason
}

// Drop records that disk's changes since reference point id alone are
// unknown (its bitmap is missing: the disk went back to a checkpoint from
// before that point), and why; older reference points stay.
func (s *State) Drop(id, disk, reason string) {
	if r := s.Reference(id); r != nil {
		r.Disks = slices.DeleteFunc(r.Disks, func(d string) bool { return d == disk })
	}
	if s.Lost == nil {
		s.Lost = map[string]string{}
	}
	s.Lost[disk] = reason
}

// Add makes r the newest reference point. Its disks are tracked from now on,
// so what was lost for them is forgotten. It returns the reference points
// dropped beyond KeepReferences, whose bitmaps the caller removes.
func (s *State) Add(r Reference) (dropped []Reference) {
	s.References = append(s.References, r)
	for _, d := range r.Disks {
		delete(s.Lost, d)
	}
	if n := len(s.References) - KeepReferences; n > 0 {
		dropped = slices.Clone(s.References[:n])
		s.References = slices.Delete(s.References, 0, n)
	}
	return dropped
}

// Remove drops reference point id and returns it (nil if unknown).
func (s *State) Remove(id string) *Reference {
	for i, r := range s.References {
		if r.ID == id {
			s.References = slices.Delete(s.References, i, i+1)
			return &r
		}
	}
	return nil
}

// Why says why disk cannot be backed up incrementally since reference id, or
// "" when it can (as far as this record knows: the caller also checks that
// the bitmap is there and consistent).
func (s *State) Why(id, disk string) string {
	switch {
	case id == "":
		return "a full backup was asked for"
	case s.Lost[disk] != "" && !s.Covers(id, disk):
		return s.Lost[disk]
	case s.Reference(id) == nil:
		return fmt.Sprintf("reference point %s is not tracked by this VM (never finished, removed, or older than the %d it keeps)", id, KeepReferences)
	case !s.Covers(id, disk):
		return fmt.Sprintf("disk %s was not tracked at reference point %s (added since)", disk, id)
	}
	return ""
}

// StampOf stamps the image file at path (File records its base name).
func StampOf(path string) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	st := Stamp{File: filepath.Base(path), Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.Inode = sys.Ino
	}
	return st, nil
}

// CheckStamp compares disk's image at path with its stamp and says what
// differs, "" when nothing does.
func (s *State) CheckStamp(disk, path string) string {
	old, ok := s.Stamps[disk]
	if !ok {
		return "hv did not see its QEMU close the disk (hvd was down or QEMU was killed), so writes may have gone untracked"
	}
	now, err := StampOf(path)
	if err != nil {
		return fmt.Sprintf("its image cannot be read: %v", err)
	}
	switch {
	case now.File != old.File:
		return fmt.Sprintf("its image is %s now, %s when hv last closed it", now.File, old.File)
	case now != old:
		return "its image file changed while no QEMU of hv had it open (written behind hv's back?)"
	}
	return ""
}

// SetStamp records disk's image at path as hv leaves it.
func (s *State) SetStamp(disk, path string) error {
	st, err := StampOf(path)
	if err != nil {
		return err
	}
	if s.Stamps == nil {
		s.Stamps = map[string]Stamp{}
	}
	s.Stamps[disk] = st
	return nil
}
