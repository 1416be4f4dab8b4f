package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func wantErr(t *testing.T, err, kind error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v containing %q", kind, parts)
	}
	if !errors.Is(err, kind) {
		t.Errorf("error %q is not %v", err, kind)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

var twoDisks = []Disk{{Name: "sys", File: "sys.qcow2", Format: "qcow2"}, {Name: "data", File: "data.raw", Format: "raw"}}

// commitCreate adds a checkpoint without touching files.
func commitCreate(t *testing.T, tr *Tree, name string) CreatePlan {
	t.Helper()
	disks := append([]Disk(nil), twoDisks...)
	for i := range disks {
		if a := tr.Active[disks[i].Name]; a != "" {
			disks[i].File, disks[i].Format = a, "qcow2"
		}
	}
	p, err := tr.PlanCreate(CreateRequest{Name: name, Type: Standard, Disks: disks})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.BeginCreate(p); err != nil {
		t.Fatal(err)
	}
	if err := tr.Commit(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanCreateChainsImages(t *testing.T) {
	tr := &Tree{}
	p1 := commitCreate(t, tr, "one")
	if p1.Checkpoint.Disks["data"] != "data.raw" || p1.Checkpoint.Formats["data"] != "raw" || p1.Checkpoint.Parent != "" {
		t.Fatalf("first checkpoint = %+v", p1.Checkpoint)
	}
	p2 := commitCreate(t, tr, "two")
	for _, ov := range p1.Overlays {
		if p2.Checkpoint.Disks[ov.Disk] != ov.File || p2.Checkpoint.Formats[ov.Disk] != "qcow2" {
			t.Errorf("second checkpoint disk %s = %q, want the first's overlay %q", ov.Disk, p2.Checkpoint.Disks[ov.Disk], ov.File)
		}
		if !strings.HasPrefix(ov.File, ov.Disk+"-") || !strings.HasSuffix(ov.File, ".qcow2") {
			t.Errorf("overlay name %q", ov.File)
		}
	}
	if tr.Current != p2.Checkpoint.ID || p2.Checkpoint.Parent != p1.Checkpoint.ID || tr.Journal != nil {
		t.Fatalf("tree = %+v", tr)
	}

	// The configuration must name the active overlays.
	_, err := tr.PlanCreate(CreateRequest{Name: "x", Disks: twoDisks})
	wantErr(t, err, errdefs.ErrConflict, `disk "sys"`, "active overlay")
	_, err = tr.PlanCreate(CreateRequest{Name: "x", Disks: []Disk{{Name: "sys", File: tr.Active["sys"], Format: "qcow2"}}})
	wantErr(t, err, errdefs.ErrConflict, `disk "data" has checkpoints`)
}

func TestPlanCreateRefusesBadInput(t *testing.T) {
	tr := &Tree{}
	cases := []struct {
		req  CreateRequest
		kind error
		want string
	}{
		{CreateRequest{Name: "a b", Disks: twoDisks}, errdefs.ErrInvalid, "contains a space"},
		{CreateRequest{Name: "../x", Disks: twoDisks}, errdefs.ErrInvalid, "name"},
		{CreateRequest{Name: "a", Type: "full", Disks: twoDisks}, errdefs.ErrInvalid, "type"},
		{CreateRequest{Name: "a", Type: Production, Memory: true, Disks: twoDisks}, errdefs.ErrInvalid, "standard"},
		{CreateRequest{Name: "a"}, errdefs.ErrInvalid, "add a disk"},
		{CreateRequest{Name: "a", Disks: []Disk{{Name: "d", File: "../etc/x", Format: "raw"}}}, errdefs.ErrInvalid, "inside the VM's directory"},
		{CreateRequest{Name: "a", Disks: []Disk{{Name: "d", File: "d.vmdk", Format: "vmdk"}}}, errdefs.ErrInvalid, "convert it"},
		{CreateRequest{Name: "a", Disks: append(twoDisks, twoDisks[0])}, errdefs.ErrInvalid, "listed twice"},
	}
	for _, c := range cases {
		_, err := tr.PlanCreate(c.req)
		wantErr(t, err, c.kind, c.want)
	}
	p, err := tr.PlanCreate(CreateRequest{Type: Standard, Memory: true, Disks: twoDisks})
	if err != nil || !strings.HasPrefix(p.Checkpoint.Name, "checkpoint-") || !strings.HasSuffix(p.Checkpoint.StateFile, ".vmstate") {
		t.Fatalf("default name and state file: %+v, %v", p.Checkpoint, err)
	}
}

func TestRenameAndGet(t *testing.T) {
	tr := &Tree{}
	one := commitCreate(t, tr, "one").Checkpoint
	commitCreate(t, tr, "two")
	if c, err := tr.Get(one.ID); err != nil || c.Name != "one" {
		t.Fatalf("Get by id: %+v, %v", c, err)
	}
	wantErr(t, tr.Rename("one", "two"), errdefs.ErrConflict, `"two" exists already`)
	wantErr(t, tr.Rename("one", "bad/name"), errdefs.ErrInvalid, "name")
	wantErr(t, tr.Rename("none", "x"), errdefs.ErrNotFound, `"none" does not exist`)
	if h := errdefs.Hint(tr.Rename("none", "x")); !strings.Contains(h, "checkpoints") {
		t.Errorf("hint %q names no list", h)
	}
	if err := tr.Rename("one", "first"); err != nil {
		t.Fatal(err)
	}
	if c, err := tr.Get("first"); err != nil || c.ID != one.ID {
		t.Fatalf("Get renamed: %+v, %v", c, err)
	}
	_, err := tr.PlanCreate(CreateRequest{Name: "first", Disks: twoDisks})
	wantErr(t, err, errdefs.ErrConflict, "exists already")
}

func TestJournalBlocksOtherOperations(t *testing.T) {
	tr := &Tree{}
	commitCreate(t, tr, "one")
	p, err := tr.PlanApply("one")
	if err != nil {
		t.Fatal(err)
	}
	tr.BeginApply(p)
	_, err = tr.PlanDelete("one", false)
	wantErr(t, err, errdefs.ErrConflict, "unfinished", "finishes or undoes")
	wantErr(t, tr.Advance(StepCommitted), errdefs.ErrConflict, "bug")
	if err := tr.Advance(StepSwitched); err != nil {
		t.Fatal(err)
	}
	wantErr(t, tr.Advance(StepBegun), errdefs.ErrConflict, "does not follow")
}

func TestCommitDropsUnfinishedStateFile(t *testing.T) {
	tr := &Tree{}
	p, _ := tr.PlanCreate(CreateRequest{Name: "s", Type: Standard, Memory: true, Disks: twoDisks})
	tr.BeginCreate(p)
	tr.Advance(StepSwitched)
	tr.Commit()
	c, _ := tr.Get("s")
	if c.StateFile != "" || tr.Journal == nil || tr.Journal.Remove[0] != p.Checkpoint.StateFile {
		t.Fatalf("state file kept without StepStateSaved: %+v, journal %+v", c, tr.Journal)
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	if tr, err := Load(dir); err != nil || len(tr.Checkpoints) != 0 {
		t.Fatalf("Load of a VM without checkpoints: %+v, %v", tr, err)
	}
	tr := &Tree{}
	commitCreate(t, tr, "one")
	tr.Checkpoints[0].Config = json.RawMessage(`{"name":"web"}`)
	if err := tr.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil || got.Current != tr.Current || got.Checkpoints[0].Name != "one" || string(got.Checkpoints[0].Config) != `{"name":"web"}` {
		t.Fatalf("Load = %+v, %v", got, err)
	}

	path := filepath.Join(dir, FileName)
	data, _ := os.ReadFile(path)
	write := func(b []byte) { os.WriteFile(path, b, 0o600) }

	write([]byte(strings.Replace(string(data), `"version": 1`, `"version": 7`, 1)))
	_, err = Load(dir)
	wantErr(t, err, errdefs.ErrInvalid, "version 7", "upgrade hv")

	write([]byte(strings.Replace(string(data), `"one"`, `"onf"`, 1)))
	_, err = Load(dir)
	wantErr(t, err, errdefs.ErrInvalid, "checksum mismatch", "restore")

	write(data[:len(data)/2])
	_, err = Load(dir)
	wantErr(t, err, errdefs.ErrInvalid, "not a valid hv file", "restore")

	// A tree that is well formed JSON but names a file outside the VM.
	bad := &Tree{Checkpoints: []Checkpoint{{ID: "x", Name: "x", Type: Standard, Disks: map[string]string{"d": "/etc/passwd"}, Formats: map[string]string{"d": "raw"}}}}
	bad.Save(dir)
	_, err = Load(dir)
	wantErr(t, err, errdefs.ErrInvalid, "not valid")

	loop := &Tree{Checkpoints: []Checkpoint{{ID: "a", Name: "a", Parent: "b", Type: Standard}, {ID: "b", Name: "b", Parent: "a", Type: Standard}}}
	loop.Save(dir)
	_, err = Load(dir)
	wantErr(t, err, errdefs.ErrInvalid, "loops")
}

func TestPlanDelete(t *testing.T) {
	tr := &Tree{}
	one := commitCreate(t, tr, "one").Checkpoint
	two := commitCreate(t, tr, "two").Checkpoint
	// Deleting the base: the child's images become standalone; nothing in use offline matters here.
	p, err := tr.PlanDelete("one", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rebases) != 2 || p.Rebases[0].Backing != "" || p.Rebases[0].Image != two.Disks[p.Rebases[0].Disk] || !p.Rebases[0].InUse {
		t.Fatalf("rebases = %+v", p.Rebases)
	}
	if len(p.Remove) != 2 || p.Remove[0] != one.Disks["data"] {
		t.Fatalf("remove = %v", p.Remove)
	}
	// Deleting the current leaf: the active overlays back on its parent.
	p, _ = tr.PlanDelete("two", false)
	if len(p.Rebases) != 2 || p.Rebases[0].Image != tr.Active["data"] || p.Rebases[0].Backing != one.Disks["data"] || p.Rebases[0].BackingFormat != "raw" {
		t.Fatalf("rebases = %+v", p.Rebases)
	}
	p, _ = tr.PlanDelete("one", true)
	if len(p.Checkpoints) != 2 || len(p.Remove) != 4 || len(p.Rebases) != 2 || p.Rebases[1].Backing != "" {
		t.Fatalf("subtree plan = %+v", p)
	}
	_, err = tr.PlanDelete("nope", false)
	wantErr(t, err, errdefs.ErrNotFound, "nope")
}

// TestHostileJournalIsRefused: recovery deletes, rebases and creates what the
// journal names, as root; a journal naming a file outside the VM's directory
// (as an imported checkpoints.json may, with a recomputed checksum) is refused
// at load, before recovery touches anything.
func TestHostileJournalIsRefused(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("keep me"), 0o600)
	rel, _ := filepath.Rel(dir, victim)
	for name, j := range map[string]*Journal{
		"remove":          {Kind: KindCreate, Step: StepCommitted, Remove: []string{rel}},
		"remove absolute": {Kind: KindDelete, Step: StepCommitted, Remove: []string{victim}},
		"overlay":         {Kind: KindApply, Step: StepBegun, Apply: &ApplyPlan{Overlays: []Overlay{{Disk: "d", File: rel}}}},
		"apply remove":    {Kind: KindApply, Step: StepSwitched, Apply: &ApplyPlan{Remove: []string{rel}}},
		"rebase image":    {Kind: KindDelete, Step: StepBegun, Delete: &DeletePlan{Checkpoints: []string{"x"}, Rebases: []Rebase{{Disk: "d", Image: rel}}}},
		"rebase backing":  {Kind: KindDelete, Step: StepBegun, Delete: &DeletePlan{Checkpoints: []string{"x"}, Rebases: []Rebase{{Disk: "d", Image: "a.qcow2", Backing: "/dev/sda", BackingFormat: "raw"}}}},
		"state file":      {Kind: KindCreate, Step: StepBegun, Create: &CreatePlan{Checkpoint: Checkpoint{ID: "n", Name: "n", Type: Standard, StateFile: rel}}},
		"backing format":  {Kind: KindApply, Step: StepBegun, Apply: &ApplyPlan{Overlays: []Overlay{{Disk: "d", File: "o.qcow2", Backing: "b.img", BackingFormat: "vmdk"}}}},
		"the tree itself": {Kind: KindCreate, Step: StepCommitted, Remove: []string{FileName}},
		"unknown step":    {Kind: KindCreate, Step: "sideways"},
	} {
		tr := &Tree{Journal: j}
		if err := tr.Save(dir); err != nil {
			t.Fatal(err)
		}
		_, err := Recover(context.Background(), dir, nil)
		wantErr(t, err, errdefs.ErrInvalid)
		if b, _ := os.ReadFile(victim); string(b) != "keep me" {
			t.Fatalf("%s: the victim file was touched", name)
		}
	}
}
