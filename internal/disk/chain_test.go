package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// qemuIO runs qemu-io commands on a qcow2 image; false when a read's pattern
// did not match (qemu-io then exits 1).
func qemuIO(t *testing.T, img string, cmds ...string) bool {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	err := exec.Command("qemu-io", append(args, img)...).Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("qemu-io: %v (install qemu-utils)", err)
		}
		return false
	}
	return true
}

func TestChainRebase(t *testing.T) {
	tool, c, dir := newTool(t), ctx(t), t.TempDir()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	if err := tool.Create(c, base, "qcow2", 8<<20); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, base, "write -P 0xa1 0 64k")
	// Relative backing names resolve against the image's directory, not ours.
	if err := tool.CreateOverlayAt(c, mid, "base.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, mid, "write -P 0xb2 1M 64k")
	if err := tool.CreateOverlayAt(c, top, "mid.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	chain, err := tool.Chain(c, top)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || chain[0].Path != top || chain[0].BackingFile != "mid.qcow2" || chain[2].BackingFile != "" {
		t.Fatalf("Chain = %+v", chain)
	}

	// Safe rebase onto base keeps mid's data in top; then standalone keeps all.
	if err := tool.Rebase(c, top, "base.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	os.Remove(mid)
	if !qemuIO(t, top, "read -P 0xa1 0 64k", "read -P 0xb2 1M 64k") {
		t.Fatal("top lost data after rebase onto base")
	}
	if err := tool.Rebase(c, top, "", ""); err != nil {
		t.Fatal(err)
	}
	os.Remove(base)
	if info, _ := tool.Info(c, top); info.BackingFile != "" {
		t.Fatalf("standalone image still backs on %q", info.BackingFile)
	}
	if !qemuIO(t, top, "read -P 0xa1 0 64k", "read -P 0xb2 1M 64k") {
		t.Fatal("top lost data after becoming standalone")
	}

	wantErr(t, tool.Rebase(c, top, "gone.qcow2", "qcow2"), errdefs.ErrNotFound, "backing", "gone.qcow2")
	wantErr(t, tool.Rebase(c, top, "x.qcow2", ""), errdefs.ErrInvalid, "backing format")
	wantErr(t, tool.CreateOverlayAt(c, filepath.Join(dir, "o.qcow2"), "top.qcow2", ""), errdefs.ErrInvalid, "format")
	wantErr(t, tool.CreateOverlayAt(c, filepath.Join(dir, "o.qcow2"), "nobase", "qcow2"), errdefs.ErrNotFound, "nobase")
	_, err = tool.Chain(c, filepath.Join(dir, "none"))
	wantErr(t, err, errdefs.ErrNotFound, "none")
}
