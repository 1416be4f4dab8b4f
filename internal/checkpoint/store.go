package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/sealed"
	"github.com/hvproject/hv/internal/validate"
)

// FileName is the tree's file inside the VM's directory.
const FileName = "checkpoints.json"

// Version is the file format this hv writes. Bump it, with a migration, when
// the meaning of a stored field changes.
const Version = 1

// format is checkpoints.json's envelope: {"version": N, "checksum": ..., "tree": {...}}.
var format = sealed.Format{VersionKey: "version", BodyKey: "tree", Version: Version}

// Save writes the tree (journal included) into vmDir atomically and durably:
// after a crash the file is either the old tree or the new one.
func (t *Tree) Save(vmDir string) error {
	return format.Write(filepath.Join(vmDir, FileName), t)
}

// Load reads the tree in vmDir. A VM without the file has no checkpoints.
// It does not look at the images: Recover does.
func Load(vmDir string) (*Tree, error) {
	path := filepath.Join(vmDir, FileName)
	data, err := fsutil.ReadFileNoFollow(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Tree{}, nil
	}
	if errors.Is(err, errdefs.ErrInvalid) {
		return nil, err // not a regular file: names the path and the fix
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v; check the VM directory's permissions", errdefs.ErrUnavailable, path, err)
	}
	return parse(path, data)
}

func parse(path string, data []byte) (*Tree, error) {
	bad := func(why string, args ...any) error {
		return fmt.Errorf("%w: %s: %s; restore the VM directory from a backup or an export", errdefs.ErrInvalid, path, fmt.Sprintf(why, args...))
	}
	version, raw, err := format.Open(path, data)
	if err != nil {
		return nil, err
	}
	if version < 1 {
		return nil, bad("version %d is not valid", version)
	}
	var t Tree
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, bad("%v", err)
	}
	if err := t.check(); err != nil {
		return nil, bad("%v", err)
	}
	return &t, nil
}

// check verifies what the tree says about itself; Verify checks the files.
func (t *Tree) check() error {
	names, ids := map[string]bool{}, map[string]bool{}
	for _, c := range t.Checkpoints {
		switch {
		case c.ID == "" || ids[c.ID]:
			return fmt.Errorf("checkpoint id %q is empty or repeated", c.ID)
		case names[c.Name]:
			return fmt.Errorf("checkpoint name %q is repeated", c.Name)
		case !c.Type.valid():
			return fmt.Errorf("checkpoint %q has type %q", c.Name, c.Type)
		case validate.Name("name", c.Name) != nil:
			return fmt.Errorf("checkpoint name %q is not valid", c.Name)
		}
		for d, f := range c.Disks {
			if !localFile(f) || !validFormat(c.Formats[d]) {
				return fmt.Errorf("checkpoint %q: disk %q: file %q or its format %q is not valid (qcow2 or raw)", c.Name, d, f, c.Formats[d])
			}
		}
		if c.StateFile != "" && !localFile(c.StateFile) {
			return fmt.Errorf("checkpoint %q: state file %q is not a file name in the VM's directory", c.Name, c.StateFile)
		}
		ids[c.ID], names[c.Name] = true, true
	}
	for _, c := range t.Checkpoints {
		// Walking up from each node must reach a root within len steps.
		id := c.Parent
		for n := 0; id != ""; n++ {
			p := t.byID(id)
			if p == nil || n > len(t.Checkpoints) {
				return fmt.Errorf("checkpoint %q: parent %q is missing or loops", c.Name, c.Parent)
			}
			id = p.Parent
		}
	}
	if t.Current != "" && !ids[t.Current] {
		return fmt.Errorf("current checkpoint %q does not exist", t.Current)
	}
	for d, f := range t.Active {
		if !localFile(f) {
			return fmt.Errorf("active disk %q: file %q is not valid", d, f)
		}
	}
	if t.Journal != nil {
		return t.Journal.check()
	}
	return nil
}

// check refuses a journal that names a file outside the VM's directory:
// recovery deletes, rebases and creates the files a journal names, as root,
// and the journal is as hostile as the rest of an imported file.
func (j *Journal) check() error {
	var names []string
	overlays := func(ovs []Overlay) {
		for _, o := range ovs {
			names = append(names, o.File)
			if o.Backing != "" || o.BackingFormat != "" {
				names = append(names, o.Backing)
				if !validFormat(o.BackingFormat) {
					names = append(names, "") // refused below with the rest
				}
			}
		}
	}
	names = append(names, j.Remove...)
	if _, ok := stepOrder[j.Step]; !ok {
		return fmt.Errorf("journal step %q is unknown", j.Step)
	}
	switch {
	case j.Create != nil:
		overlays(j.Create.Overlays)
		for _, f := range j.Create.Checkpoint.Disks {
			names = append(names, f)
		}
		if sf := j.Create.Checkpoint.StateFile; sf != "" {
			names = append(names, sf)
		}
	case j.Apply != nil:
		overlays(j.Apply.Overlays)
		names = append(names, j.Apply.Remove...)
	case j.Delete != nil:
		for _, r := range j.Delete.Rebases {
			names = append(names, r.Image)
			if r.Backing != "" {
				names = append(names, r.Backing)
			}
		}
		names = append(names, j.Delete.Remove...)
	}
	for _, n := range names {
		if !localFile(n) || n == FileName {
			return fmt.Errorf("the journal names %q, which is not an image file in the VM's directory", n)
		}
	}
	return nil
}

func validFormat(f string) bool { return f == "qcow2" || f == "raw" }

// localFile accepts a plain file name inside the VM's directory: the tree
// must never make hv touch a file elsewhere.
func localFile(f string) bool {
	return f != "" && f == filepath.Base(f) && f != "." && f != ".."
}
