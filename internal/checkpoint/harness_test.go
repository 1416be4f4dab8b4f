package checkpoint

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/disk"
)

// slots are the places the tests write: slot i is 64 KiB at i MiB.
const (
	slots    = 8
	slotLen  = 64 << 10
	diskSize = slots << 20
)

// vm is a VM directory with two disks, "sys" (qcow2) and "data" (raw), and
// what every checkpoint, and the VM now, must read.
type vm struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	tool   *disk.Tool
	tree   *Tree
	off    *Offline
	now    [slots]byte            // what sys reads now; data reads the complement
	expect map[string][slots]byte // checkpoint name -> what it reads
}

func newVM(t *testing.T) *vm {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatalf("%v (the checkpoint tests need qemu-img and qemu-io)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	v := &vm{t: t, ctx: ctx, dir: t.TempDir(), tool: tool, tree: &Tree{}, expect: map[string][slots]byte{}}
	v.off = &Offline{Dir: v.dir, Tool: tool}
	for _, d := range v.disks() {
		if err := tool.Create(ctx, v.path(d.File), d.Format, diskSize); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *vm) path(f string) string { return filepath.Join(v.dir, f) }

// disks is what the VM's configuration would say: the active overlays once
// there are checkpoints.
func (v *vm) disks() []Disk {
	ds := []Disk{{Name: "sys", File: "sys.qcow2", Format: "qcow2"}, {Name: "data", File: "data.raw", Format: "raw"}}
	for i := range ds {
		if a := v.tree.Active[ds[i].Name]; a != "" {
			ds[i].File, ds[i].Format = a, "qcow2"
		}
	}
	return ds
}

// write puts pattern p into slot i of both disks (complemented on data).
func (v *vm) write(i int, p byte) {
	v.t.Helper()
	for _, d := range v.disks() {
		b := p
		if d.Name == "data" {
			b = ^p
		}
		qemuIO(v.t, d.Format, v.path(d.File), false, fmt.Sprintf("write -P 0x%02x %d %d", b, i<<20, slotLen))
	}
	v.now[i] = p
}

func (v *vm) create(name string) {
	v.t.Helper()
	if _, err := v.off.Create(v.ctx, v.tree, CreateRequest{Name: name, Type: Production, Disks: v.disks()}); err != nil {
		v.t.Fatalf("create %s: %v", name, err)
	}
	v.expect[name] = v.now
}

func (v *vm) apply(name string) {
	v.t.Helper()
	if err := v.off.Apply(v.ctx, v.tree, name); err != nil {
		v.t.Fatalf("apply %s: %v", name, err)
	}
	v.now = v.expect[name]
}

// reads reports whether image (through its chain) holds want on disk d.
func (v *vm) reads(d, format, file string, want [slots]byte) bool {
	var cmds []string
	for i, p := range want {
		if d == "data" {
			p = ^p
			if want[i] == 0 {
				p = 0 // never written: reads zeroes
			}
		}
		cmds = append(cmds, fmt.Sprintf("read -P 0x%02x %d %d", p, i<<20, slotLen))
	}
	return qemuIO(v.t, format, v.path(file), true, cmds...)
}

// check verifies the tree against the files, every checkpoint's content, the
// VM's current content, and that the directory holds only referenced files.
func (v *vm) check(label string) {
	v.t.Helper()
	if err := v.tree.Verify(v.ctx, v.dir, v.tool); err != nil {
		v.t.Fatalf("%s: %v", label, err)
	}
	for _, c := range v.tree.Checkpoints {
		for d, f := range c.Disks {
			if !v.reads(d, c.Formats[d], f, v.expect[c.Name]) {
				v.t.Fatalf("%s: checkpoint %s disk %s (%s) reads wrong data", label, c.Name, d, f)
			}
		}
	}
	for _, d := range v.disks() {
		if !v.reads(d.Name, d.Format, d.File, v.now) {
			v.t.Fatalf("%s: the VM's disk %s (%s) reads wrong data", label, d.Name, d.File)
		}
	}
	want := []string{FileName}
	if len(v.tree.Active) == 0 {
		want = append(want, "sys.qcow2", "data.raw")
	}
	for f := range v.tree.files() {
		if f != "" {
			want = append(want, f)
		}
	}
	slices.Sort(want)
	want = slices.Compact(want)
	entries, _ := os.ReadDir(v.dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		v.t.Fatalf("%s: directory holds %v, the tree references %v", label, got, want)
	}
}

// names lists the tree's checkpoint names, sorted.
func (v *vm) names() []string {
	var out []string
	for _, c := range v.tree.Checkpoints {
		out = append(out, c.Name)
	}
	slices.Sort(out)
	return out
}

// clone copies the VM directory, so each case starts from the same tree
// without building it again.
func (v *vm) clone(t *testing.T) *vm {
	t.Helper()
	// A context of its own: a test of many clones must not share one deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	c := &vm{t: t, ctx: ctx, dir: t.TempDir(), tool: v.tool, now: v.now, expect: maps.Clone(v.expect)}
	c.off = &Offline{Dir: c.dir, Tool: c.tool}
	out, err := exec.Command("cp", "-a", "--sparse=always", v.dir+"/.", c.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if c.tree, err = Load(c.dir); err != nil {
		t.Fatal(err)
	}
	return c
}

// qemuIO runs qemu-io commands; it returns false when a read's pattern does
// not match, which qemu-io reports with exit status 1.
func qemuIO(t *testing.T, format, img string, readOnly bool, cmds ...string) bool {
	t.Helper()
	args := []string{"-f", format}
	if readOnly {
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, img)...).CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("qemu-io: %v (install qemu-utils)", err)
		}
		if !strings.Contains(string(out), "Pattern verification failed") {
			t.Fatalf("qemu-io %v: %s", args, out)
		}
		return false
	}
	if !readOnly && strings.Contains(string(out), "error") {
		t.Fatalf("qemu-io %v: %s", args, out)
	}
	return true
}
