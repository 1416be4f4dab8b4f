package checkpoints

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The tests run the feature against fakes of the host (hostvmtest) on real
// qcow2 and raw images made by qemu-img in a temporary directory. The fake
// QEMU leaves files alone (its Rebase runs qemu-img, as a stream job would
// change the file), so the guest's writes are made with qemu-io: what each
// disk reads is checked through every operation and failure.

// slots are the places the tests write: slot i is 64 KiB at i MiB.
const (
	slots    = 4
	slotLen  = 64 << 10
	diskSize = slots << 20
)

// rig is a VM with two disks, "root" (qcow2) and "data" (raw), in a
// temporary directory; running, it has a fake QEMU.
type rig struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	tool *disk.Tool
	v    *hostvmtest.VM
	h    *hostvmtest.Host
	f    *Service
	ss   *hostvmtest.Session // nil when off
	now  [slots]byte         // what every disk reads now
	mark int                 // calls of the fake QEMU before the step under test
}

func newRig(t *testing.T, running bool) *rig {
	t.Helper()
	tool, err := disk.NewTool()
	if err != nil {
		t.Fatalf("%v (these tests need qemu-img and qemu-io)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, dir: t.TempDir(), tool: tool}
	cfg := vmconfig.Config{Name: "web", ID: "0b0e5f1c-0000-4000-8000-0000000000c1", Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{
			{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}, {Name: "data", File: "data.raw", Format: "raw"}}}
	for _, d := range cfg.Disks {
		if err := tool.Create(ctx, r.path(d.File), d.Format, diskSize); err != nil {
			t.Fatal(err)
		}
	}
	state := api.StateOff
	if running {
		state = api.StateRunning
	}
	if r.v, err = hostvmtest.NewVM(r.dir, cfg, state); err != nil {
		t.Fatal(err)
	}
	if running {
		r.ss = hostvmtest.NewSession("root.qcow2", "data.raw")
		r.ss.Blk.Images = blockops.Offline{Tool: tool, Dir: r.dir}
		r.v.Sess = r.ss
		_ = r.v.UpdateRuntime(func(rt *vmconfig.Runtime) { rt.BootMemoryBytes, rt.Accel = 128<<20, "tcg" })
		r.v.Up = 42 * time.Second
	}
	r.h = hostvmtest.NewHost(r.v)
	r.h.Tool = tool
	r.f = New(r.h)
	return r
}

func (r *rig) path(f string) string { return filepath.Join(r.dir, f) }

// write puts pattern p into slot i of both disks, as the guest would.
func (r *rig) write(i int, p byte) {
	r.t.Helper()
	for _, d := range r.v.Config().Disks {
		qemuIO(r.t, d.Format, r.path(d.File), false, fmt.Sprintf("write -P 0x%02x %d %d", p, i<<20, slotLen))
	}
	r.now[i] = p
}

// checkReads fails unless every disk reads what the guest wrote.
func (r *rig) checkReads(when string) {
	r.t.Helper()
	for _, d := range r.v.Config().Disks {
		for i, p := range r.now {
			if !qemuIO(r.t, d.Format, r.path(d.File), true, fmt.Sprintf("read -P 0x%02x %d %d", p, i<<20, slotLen)) {
				r.t.Fatalf("%s: disk %s (%s) does not read 0x%02x in slot %d: the guest's data is lost", when, d.Name, d.File, p, i)
			}
		}
	}
}

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
	return !strings.Contains(string(out), "Pattern verification failed")
}

// tree reads the tree as hvd would find it on disk.
func (r *rig) tree() *checkpoint.Tree {
	r.t.Helper()
	t, err := checkpoint.Load(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	return t
}

// images lists the image files in the VM's directory.
func (r *rig) images() []string {
	r.t.Helper()
	var out []string
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".qcow2") || strings.HasSuffix(n, ".raw") || strings.Contains(n, "vmstate") {
			out = append(out, n)
		}
	}
	return out
}

// checkSettled checks what every operation must leave, failed or not, once
// settled: no journal; every image the tree names there, with the backing
// the tree implies (checkpoint.Verify); no image the tree does not name;
// the configuration on the tree's active overlays.
func (r *rig) checkSettled(when string) *checkpoint.Tree {
	r.t.Helper()
	t := r.tree()
	if t.Journal != nil {
		r.t.Fatalf("%s: the tree still has a journal: %+v", when, *t.Journal)
	}
	if err := t.Verify(r.ctx, r.dir, r.tool); err != nil {
		r.t.Fatalf("%s: %v", when, err)
	}
	named := map[string]bool{}
	for _, c := range t.Checkpoints {
		for _, f := range c.Disks {
			named[f] = true
		}
		named[c.StateFile] = true
	}
	for _, f := range t.Active {
		named[f] = true
	}
	if len(t.Checkpoints) == 0 {
		named["root.qcow2"], named["data.raw"] = true, true
	}
	for _, f := range r.images() {
		if !named[f] {
			r.t.Errorf("%s: %s is left in the VM's directory, named by no checkpoint", when, f)
		}
	}
	for _, d := range r.v.Config().Disks {
		if a := t.Active[d.Name]; a != "" && d.File != a {
			r.t.Errorf("%s: the configuration names %s for disk %s, the tree %s", when, d.File, d.Name, a)
		}
	}
	return t
}

// names lists a tree's checkpoints by name.
func names(t *checkpoint.Tree) []string {
	var out []string
	for _, c := range t.Checkpoints {
		out = append(out, c.Name)
	}
	return out
}

// create takes a checkpoint, failing the test on an error.
func (r *rig) create(name, typ string) api.Checkpoint {
	r.t.Helper()
	c, err := r.f.Create(r.ctx, nil, r.v, Request{Name: name, Type: typ})
	if err != nil {
		r.t.Fatalf("checkpoint %s: %v", name, err)
	}
	return c
}

// crash runs fn as hvd would run it until the hook point, where hvd dies.
func (r *rig) crashAt(point string, fn func()) {
	r.t.Helper()
	type crash struct{}
	r.h.OnHook = func(p string) {
		if p == point {
			panic(crash{})
		}
	}
	defer func() { r.h.OnHook = nil }()
	func() {
		defer func() {
			if p := recover(); p != nil {
				if _, ok := p.(crash); !ok {
					panic(p)
				}
			}
		}()
		fn()
		r.t.Fatalf("hvd did not reach %s", point)
	}()
}

// restart is hvd starting again: a new feature over the same VM, which
// recovers it (a live merge in the background, under the VM's lock).
func (r *rig) restart() {
	r.t.Helper()
	r.f = New(r.h)
	r.f.Recover(r.ctx, r.v)
	if err := r.h.WithLock(r.ctx, r.v, "test", func() error { return nil }); err != nil {
		r.t.Fatal(err)
	}
}

// failingQemuImg is a qemu-img that fails its nth rebase (as with a full
// disk) and runs the real one otherwise.
func failingQemuImg(t *testing.T, real string, nth int) *disk.Tool {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = rebase ]; then
	n=$(cat %[1]s/count 2>/dev/null || echo 0); n=$((n+1)); echo $n >%[1]s/count
	if [ $n -eq %[2]d ]; then echo "qemu-img: Could not write: No space left on device" >&2; exit 1; fi
fi
exec %[3]s "$@"
`, dir, nth, real)
	bin := filepath.Join(dir, "qemu-img")
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return &disk.Tool{Bin: bin}
}

// begin marks the start of the step under test: calls lists those after it.
func (r *rig) begin() { r.mark = len(r.ss.Calls()) }

// calls lists the fake QEMU's calls of the methods named since begin.
func (r *rig) calls(methods ...string) []string {
	var out []string
	for _, c := range r.ss.Calls()[r.mark:] {
		if slices.Contains(methods, strings.Fields(c)[0]) {
			out = append(out, c)
		}
	}
	return out
}
