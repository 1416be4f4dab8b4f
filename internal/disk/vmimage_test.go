package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

// TestCheckVMImage: every way a crafted image could make QEMU (or hv's own
// qemu-img runs) open a host file is refused, against hv's records.
func TestCheckVMImage(t *testing.T) {
	tool, dir := newTool(t), t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	qemuImg(t, "create", "-q", "-f", "qcow2", p("good.qcow2"), "1M")
	qemuImg(t, "create", "-q", "-f", "raw", p("base.raw"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", p("over.qcow2"))
	if _, err := tool.CheckVMImage(ctx(t), p("good.qcow2"), "qcow2", "", ""); err != nil {
		t.Fatalf("a plain qcow2: %v", err)
	}
	if _, err := tool.CheckVMImage(ctx(t), p("over.qcow2"), "qcow2", "base.raw", "raw"); err != nil {
		t.Fatalf("an overlay as recorded: %v", err)
	}

	// A qcow2 whose data lives in a host file (data-file=/dev/sda in the attack).
	os.WriteFile(p("victim"), make([]byte, 1<<20), 0o600)
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+p("victim"), p("datafile.qcow2"), "1M")
	_, err := tool.CheckVMImage(ctx(t), p("datafile.qcow2"), "qcow2", "", "")
	wantErr(t, err, errdefs.ErrInvalid, "data in another file", "victim")

	// A backing file the records do not know: the header names a host file.
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", p("victim"), "-F", "raw", p("backs-host.qcow2"))
	_, err = tool.CheckVMImage(ctx(t), p("backs-host.qcow2"), "qcow2", "", "")
	wantErr(t, err, errdefs.ErrInvalid, "backs on", "victim", "do not know")
	_, err = tool.CheckVMImage(ctx(t), p("over.qcow2"), "qcow2", "other.qcow2", "qcow2")
	wantErr(t, err, errdefs.ErrInvalid, `records say "other.qcow2"`)
	// The right backing name with another format (a raw base read as qcow2).
	_, err = tool.CheckVMImage(ctx(t), p("over.qcow2"), "qcow2", "base.raw", "qcow2")
	wantErr(t, err, errdefs.ErrInvalid, "backing file's format")

	// Encrypted by someone else.
	qemuImg(t, "create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2",
		"-o", "encrypt.format=luks,encrypt.key-secret=s0", p("enc.qcow2"), "1M")
	_, err = tool.CheckVMImage(ctx(t), p("enc.qcow2"), "qcow2", "", "")
	wantErr(t, err, errdefs.ErrInvalid, "encrypted")

	// A recorded format QEMU must not open in place.
	_, err = tool.CheckVMImage(ctx(t), p("good.qcow2"), "vmdk", "", "")
	wantErr(t, err, errdefs.ErrInvalid, `"vmdk"`)

	// A raw image whose content is a qcow2 header naming a host file (what a
	// guest can write into its own raw disk): read as raw, as recorded, it
	// is plain data; recorded as qcow2 it would be refused for its backing.
	hdr, _ := os.ReadFile(p("backs-host.qcow2"))
	os.WriteFile(p("guest.raw"), append(hdr, make([]byte, 1<<20-len(hdr)%(1<<20))...), 0o600)
	if info, err := tool.CheckVMImage(ctx(t), p("guest.raw"), "raw", "", ""); err != nil || info.BackingFile != "" {
		t.Fatalf("raw image with a qcow2-looking content: %+v, %v", info, err)
	}

	// A link to a device or a host file, not a regular file.
	os.Symlink("/dev/null", p("link.raw"))
	_, err = tool.CheckVMImage(ctx(t), p("link.raw"), "raw", "", "")
	wantErr(t, err, errdefs.ErrInvalid, "not a regular file")

	// Not qcow2 at all though recorded so.
	_, err = tool.CheckVMImage(ctx(t), p("base.raw"), "qcow2", "", "")
	wantErr(t, err, errdefs.ErrInvalid, "base.raw")
}
