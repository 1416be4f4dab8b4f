package machine

import (
	"path/filepath"
	"testing"
)

// A save says "completed" a moment before QEMU leaves "finish-migrate"; a
// cont in that window is refused ("Migration is not finalized yet"), which
// left a guest paused after a standard checkpoint. SaveState returns only
// once the guest may run again: every save here is followed at once by a
// cont that must succeed. (The window is narrow: the test hits it only
// under load, as the CI run that found it was.)
func TestSaveThenContinue(t *testing.T) {
	dir := t.TempDir()
	qemuImg(t, "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base.qcow2"), "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	m := startVM(t, dir, filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "base.qcow2"))
	ctx := testCtx(t)
	for i := 0; i < 30; i++ {
		if err := m.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.SaveState(ctx, filepath.Join(dir, "state"), nil); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		if err := m.Cont(ctx); err != nil {
			t.Fatalf("cont right after save %d: %v", i, err)
		}
		st, err := m.QMP().Status(ctx)
		if err != nil || !st.Running {
			t.Fatalf("after save %d and cont: %+v, %v", i, st, err)
		}
	}
}
