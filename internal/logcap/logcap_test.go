package logcap

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestTrimKeepsTheTail: a log appended to through an O_APPEND descriptor (as
// QEMU holds it) is cut back to about half the limit, the newest lines kept,
// and the writer's next lines land at the end.
func TestTrimKeepsTheTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(w, "line %06d of a guest that prints forever\n", i)
	}
	const max = 1 << 20
	dropped, err := Trim(path, max)
	if err != nil || dropped == 0 {
		t.Fatalf("Trim = %d, %v", dropped, err)
	}
	fmt.Fprintf(w, "after the trim\n")
	b, _ := os.ReadFile(path)
	if len(b) > max || len(b) < max/2 {
		t.Fatalf("size after trim %d, want about %d", len(b), max/2)
	}
	if !bytes.HasSuffix(b, []byte("line 099999 of a guest that prints forever\nafter the trim\n")) {
		t.Fatalf("the newest lines were not kept: ...%q", b[len(b)-80:])
	}
	if again, _ := Trim(path, max); again != 0 {
		t.Fatalf("a log under the limit was trimmed by %d", again)
	}
}

func TestTrimLeavesWhatIsNotALog(t *testing.T) {
	dir := t.TempDir()
	if n, err := Trim(filepath.Join(dir, "missing"), 10); n != 0 || err != nil {
		t.Fatalf("missing file: %d %v", n, err)
	}
	os.WriteFile(filepath.Join(dir, "target"), bytes.Repeat([]byte("x"), 100), 0o600)
	os.Symlink("target", filepath.Join(dir, "link"))
	if _, err := Trim(filepath.Join(dir, "link"), 10); err == nil {
		t.Fatal("Trim followed a symbolic link")
	}
	if n, err := Trim(filepath.Join(dir, "target"), 0); n != 0 || err == nil {
		t.Fatalf("max 0: %d %v", n, err)
	}
}

// TestCopyTail is the fallback for file systems without collapse.
func TestCopyTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	os.WriteFile(path, []byte("0123456789abcdef"), 0o600)
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	defer f.Close()
	if n, err := copyTail(f, 16, 6); n != 10 || err != nil {
		t.Fatalf("copyTail = %d, %v", n, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "abcdef" {
		t.Fatalf("after copyTail: %q", b)
	}
}
