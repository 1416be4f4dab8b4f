package machine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/qmp"
)

// testCA is one host's certificate authority, as each hvd has its own.
type testCA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{cert: c, der: der, key: k}
}

// tlsDir writes what QEMU reads for endpoint (server or client): the host's
// certificate for name, signed by its CA, and the CAs it trusts.
func tlsDir(t *testing.T, own testCA, name, endpoint string, trusted ...testCA) string {
	t.Helper()
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, own.cert, &k.PublicKey, own.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	var cas []byte
	for _, ca := range trusted {
		cas = append(cas, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})...)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca-cert.pem", cas)
	write(endpoint+"-cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write(endpoint+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return dir
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
	return string(out)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// startVM starts a QEMU with one disk (top over base) and no guest OS: the
// firmware finds nothing to boot and waits, which is enough to move memory,
// devices and the disk.
func startVM(t *testing.T, dir, top, base string, extra ...string) *Machine {
	t.Helper()
	sock := filepath.Join(dir, "qmp.sock")
	baseP, baseF := qemu.BlockdevArgs(base, "qcow2", "")
	baseNode, _ := qemu.ImageNodes(base)
	topP, topF := qemu.BlockdevArgs(top, "qcow2", baseNode)
	topNode, _ := qemu.ImageNodes(top)
	uuid := fmt.Sprintf("00000000-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffffffff)
	args := append([]string{"-nodefaults", "-display", "none", "-machine", "pc,accel=tcg", "-m", "128", "-uuid", uuid,
		"-qmp", "unix:" + sock + ",server=on,wait=off",
		"-blockdev", baseP, "-blockdev", baseF + ",read-only=on", "-blockdev", topP, "-blockdev", topF,
		"-device", "virtio-blk-pci,drive=" + topNode + ",id=disk0"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Options{Name: "t", UUID: uuid, QMPSocket: sock, LogPath: filepath.Join(dir, "qemu.log")}, "qemu-system-x86_64", args, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	return m
}

func hmp(t *testing.T, m *Machine, cmd string) string {
	t.Helper()
	var out string
	if err := m.QMP().Execute(testCtx(t), "human-monitor-command", map[string]string{"command-line": cmd}, &out); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if strings.Contains(out, "rror") || strings.Contains(out, "onflict") || strings.Contains(out, "failed") {
		t.Fatalf("%s: %s", cmd, out)
	}
	return out
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// A running VM moves to another QEMU as between two hosts with their own
// CAs: the top image mirrored over NBD with TLS onto the same backing chain
// (copied beforehand), the change-tracking bitmap carried along, memory and
// devices over the TLS migration stream; the target's disk then equals the
// source's, writes made during the mirror included.
func TestMigrateBetweenHosts(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatalf("QEMU is required: %v", err)
	}
	caA, caB := newCA(t, "host-a"), newCA(t, "host-b")
	srcDir, dstDir := t.TempDir(), t.TempDir()
	base := filepath.Join(srcDir, "base.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "64M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", filepath.Join(srcDir, "top.qcow2"))
	src := startVM(t, srcDir, filepath.Join(srcDir, "top.qcow2"), base)
	topNode, _ := qemu.ImageNodes("top.qcow2")
	hmp(t, src, `qemu-io -d /machine/peripheral/disk0/virtio-backend "write -P 0xab 0 1M"`)
	if err := qmp.Do(testCtx(t), src.QMP(), qmp.BlockDirtyBitmapAdd{Node: topNode, Name: "hv-ref", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	hmp(t, src, `qemu-io -d /machine/peripheral/disk0/virtio-backend "write -P 0xcd 4M 64k"`)

	// The target: the backing chain copied as a file, a fresh top over it.
	dstBase := filepath.Join(dstDir, "base.qcow2")
	qemuImg(t, "convert", "-O", "qcow2", base, dstBase)
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", dstBase, "-F", "qcow2", filepath.Join(dstDir, "top.qcow2"))
	dst := startVM(t, dstDir, filepath.Join(dstDir, "top.qcow2"), dstBase, "-incoming", "defer")
	mapping := []qmp.BitmapMigrationNode{{NodeName: topNode, Alias: "disk0", Bitmaps: []qmp.BitmapMigrationBitmap{{Name: "hv-ref", Alias: "ref0"}}}}
	in := Incoming{TLS: MigrationTLS{Dir: tlsDir(t, caB, "host-b", "server", caA, caB)},
		Listen: "127.0.0.1:" + freePort(t), NBDListen: "127.0.0.1:" + freePort(t), Disks: []string{topNode}, Bitmaps: mapping}
	if err := dst.ListenIncoming(testCtx(t), in, false); err != nil {
		t.Fatal(err)
	}
	out := Outgoing{TLS: MigrationTLS{Dir: tlsDir(t, caA, "host-a", "client", caA, caB), Hostname: "host-b"},
		Target: in.Listen, NBD: in.NBDListen, Disks: []string{topNode}, Bitmaps: mapping, MaxBandwidth: 1 << 30, DowntimeLimit: 300}
	var stages []string
	note := func(p MigrationProgress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	}
	if err := src.MirrorDisks(testCtx(t), out, note); err != nil {
		t.Fatal(err)
	}
	hmp(t, src, `qemu-io -d /machine/peripheral/disk0/virtio-backend "write -P 0xef 8M 64k"`) // mirrored as it happens
	p, err := src.MigrateState(testCtx(t), out, note)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.WaitIncomingDone(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if st, _ := src.Status(testCtx(t)); st.Status != "postmigrate" {
		t.Errorf("source after the migration: %+v", st)
	}
	if p.RAMTotal == 0 || p.Stage != "switch-over" || !slices.Equal(stages, []string{"disks", "memory", "switch-over"}) {
		t.Errorf("progress %+v, stages %v", p, stages)
	}
	src.CloseOutgoing(testCtx(t), out)
	dst.CloseIncoming(testCtx(t), in)
	// Change tracking arrived: the bitmap counts the writes made after it
	// was added (4M and 8M, 64 KiB each), not the first one.
	nodes, err := qmp.Run(testCtx(t), dst.QMP(), qmp.QueryNamedBlockNodes{Flat: true})
	if err != nil {
		t.Fatal(err)
	}
	var bm *qmp.DirtyBitmap
	for _, n := range nodes {
		if n.NodeName == topNode {
			for i := range n.DirtyBitmaps {
				if n.DirtyBitmaps[i].Name == "hv-ref" {
					bm = &n.DirtyBitmaps[i]
				}
			}
		}
	}
	if bm == nil || bm.Count != 128<<10 || !bm.Persistent {
		t.Errorf("change tracking on the target: %+v", bm)
	}
	if err := dst.Cont(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// The VM that arrived can be saved (quick migration's first step): the
	// live migration's pause-before-switchover must not stop the save.
	if err := dst.Pause(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	saveCtx, cancel := context.WithTimeout(testCtx(t), 60*time.Second)
	defer cancel()
	if err := dst.SaveState(saveCtx, filepath.Join(dstDir, "state.save"), nil); err != nil {
		t.Fatalf("saving the VM that arrived: %v", err)
	}
	src.Quit()
	dst.Quit()
	if out := qemuImg(t, "compare", "-f", "qcow2", "-F", "qcow2", filepath.Join(srcDir, "top.qcow2"), filepath.Join(dstDir, "top.qcow2")); !strings.Contains(out, "identical") {
		t.Errorf("the disks differ after the move: %s", out)
	}
}

// A target that does not trust the source's CA refuses it: the mirror never
// starts, and the source is left as it was (no job, no NBD node, no
// credentials, the guest running).
func TestMigrateUntrustedSource(t *testing.T) {
	caA, caB, caX := newCA(t, "host-a"), newCA(t, "host-b"), newCA(t, "intruder")
	srcDir, dstDir := t.TempDir(), t.TempDir()
	for _, d := range []string{srcDir, dstDir} {
		qemuImg(t, "create", "-q", "-f", "qcow2", filepath.Join(d, "base.qcow2"), "16M")
		qemuImg(t, "create", "-q", "-f", "qcow2", "-b", filepath.Join(d, "base.qcow2"), "-F", "qcow2", filepath.Join(d, "top.qcow2"))
	}
	src := startVM(t, srcDir, filepath.Join(srcDir, "top.qcow2"), filepath.Join(srcDir, "base.qcow2"))
	dst := startVM(t, dstDir, filepath.Join(dstDir, "top.qcow2"), filepath.Join(dstDir, "base.qcow2"), "-incoming", "defer")
	topNode, _ := qemu.ImageNodes("top.qcow2")
	in := Incoming{TLS: MigrationTLS{Dir: tlsDir(t, caB, "host-b", "server", caA, caB)},
		Listen: "127.0.0.1:" + freePort(t), NBDListen: "127.0.0.1:" + freePort(t), Disks: []string{topNode}}
	if err := dst.ListenIncoming(testCtx(t), in, false); err != nil {
		t.Fatal(err)
	}
	out := Outgoing{TLS: MigrationTLS{Dir: tlsDir(t, caX, "host-a", "client", caX, caB), Hostname: "host-b"},
		Target: in.Listen, NBD: in.NBDListen, Disks: []string{topNode}}
	if err := src.MirrorDisks(testCtx(t), out, nil); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("a source with a certificate the target does not trust: %v", err)
	}
	jobs, _ := qmp.Run(testCtx(t), src.QMP(), qmp.QueryJobs{})
	nodes, _ := qmp.Run(testCtx(t), src.QMP(), qmp.QueryNamedBlockNodes{Flat: true})
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, nbdTarget) {
			t.Errorf("NBD node %s left behind", n.NodeName)
		}
	}
	if len(jobs) > 0 {
		t.Errorf("jobs left behind: %+v", jobs)
	}
	if _, err := qmp.Run(testCtx(t), src.QMP(), qmp.QomGet[bool]{Path: "/objects/" + migrateTLS, Property: "verify-peer"}); err == nil {
		t.Error("the TLS credentials are left behind")
	}
	if st, _ := src.Status(testCtx(t)); !st.Running {
		t.Errorf("source guest after the refused move: %+v", st)
	}
}

// The machine type is the versioned one "pc" stands for in this QEMU.
func TestMachineType(t *testing.T) {
	dir := t.TempDir()
	qemuImg(t, "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", filepath.Join(dir, "base.qcow2"), "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	m := startVM(t, dir, filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "base.qcow2"))
	mt, err := m.MachineType(testCtx(t))
	if err != nil || !strings.HasPrefix(mt, "pc-i440fx-") || strings.HasSuffix(mt, "-machine") {
		t.Fatalf("machine type %q, %v", mt, err)
	}
}

// A target that dies after the mirrors are ready fails the mirror at the
// guest's next write; undoing the move leaves no job behind, so the VM can
// move again (a concluded job's ID used to refuse every later mirror).
func TestMirrorTargetDies(t *testing.T) {
	caA, caB := newCA(t, "host-a"), newCA(t, "host-b")
	srcDir := t.TempDir()
	base := filepath.Join(srcDir, "base.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "64M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", filepath.Join(srcDir, "top.qcow2"))
	src := startVM(t, srcDir, filepath.Join(srcDir, "top.qcow2"), base)
	topNode, _ := qemu.ImageNodes("top.qcow2")
	target := func() (*Machine, Outgoing) {
		dstDir := t.TempDir()
		dstBase := filepath.Join(dstDir, "base.qcow2")
		qemuImg(t, "convert", "-O", "qcow2", base, dstBase)
		qemuImg(t, "create", "-q", "-f", "qcow2", "-b", dstBase, "-F", "qcow2", filepath.Join(dstDir, "top.qcow2"))
		dst := startVM(t, dstDir, filepath.Join(dstDir, "top.qcow2"), dstBase, "-incoming", "defer")
		in := Incoming{TLS: MigrationTLS{Dir: tlsDir(t, caB, "host-b", "server", caA, caB)},
			Listen: "127.0.0.1:" + freePort(t), NBDListen: "127.0.0.1:" + freePort(t), Disks: []string{topNode}}
		if err := dst.ListenIncoming(testCtx(t), in, false); err != nil {
			t.Fatal(err)
		}
		return dst, Outgoing{TLS: MigrationTLS{Dir: tlsDir(t, caA, "host-a", "client", caA, caB), Hostname: "host-b"},
			Target: in.Listen, NBD: in.NBDListen, Disks: []string{topNode}, StallAfter: 5 * time.Second}
	}
	dst, out := target()
	if err := src.MirrorDisks(testCtx(t), out, nil); err != nil {
		t.Fatal(err)
	}
	if err := dst.Kill(); err != nil {
		t.Fatal(err)
	}
	hmp(t, src, `qemu-io -d /machine/peripheral/disk0/virtio-backend "write -P 0x11 0 64k"`)
	deadline := time.Now().Add(time.Minute)
	for {
		jobs, err := qmp.Run(testCtx(t), src.QMP(), qmp.QueryJobs{})
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 1 && jobs[0].Status == qmp.JobConcluded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror to a dead target did not fail: %+v", jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	src.AbortOutgoing(testCtx(t), out, true)
	if jobs, _ := qmp.Run(testCtx(t), src.QMP(), qmp.QueryJobs{}); len(jobs) != 0 {
		t.Fatalf("jobs left after the move was undone: %+v", jobs)
	}
	_, out2 := target()
	if err := src.MirrorDisks(testCtx(t), out2, nil); err != nil {
		t.Fatalf("mirroring again after a target died: %v", err)
	}
	src.AbortOutgoing(testCtx(t), out2, true)
}

func TestStallWatch(t *testing.T) {
	w := newStallWatch(50 * time.Millisecond)
	if err := w.check(0, "", "copying"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if err := w.check(10, "", "copying"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if err := w.check(10, "device", "copying"); err != nil { // a new stage is progress
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if err := w.check(10, "device", "copying the disks"); err == nil || !strings.Contains(err.Error(), "copying the disks made no progress") {
		t.Fatalf("stalled: %v", err)
	}
}

// Only TCG before QEMU 9.0 loses a running guest's writes during a live
// migration; a version hv cannot read is taken as affected.
func TestLosesDirtyPages(t *testing.T) {
	for _, tc := range []struct {
		accel, version string
		want           bool
	}{
		{"tcg", "7.2.22", true},
		{"tcg", "8.2.2", true},
		{"tcg", "9.0.0", false},
		{"tcg", "10.1.0", false},
		{"tcg", "", true},
		{"kvm", "7.2.22", false},
	} {
		if got := LosesDirtyPages(tc.accel, tc.version); got != tc.want {
			t.Errorf("LosesDirtyPages(%q, %q) = %v, want %v", tc.accel, tc.version, got, tc.want)
		}
	}
}

func TestLimits(t *testing.T) {
	for _, c := range []struct {
		out          Outgoing
		bw, downtime uint64
	}{
		{Outgoing{}, UnboundedBandwidth, DefaultDowntimeLimit},
		{Outgoing{MaxBandwidth: 8 << 20}, 8 << 20, DefaultDowntimeLimit},
		{Outgoing{DowntimeLimit: 50}, UnboundedBandwidth, 50},
	} {
		bw, downtime := limits(c.out)
		if bw != c.bw || downtime != c.downtime {
			t.Errorf("limits(%+v) = %d B/s, %d ms; want %d, %d", c.out, bw, downtime, c.bw, c.downtime)
		}
	}
	// QEMU's rate limiter works in int64 bytes per tenth of a second: the
	// unbounded value must stay far inside it.
	if UnboundedBandwidth > math.MaxInt64/1000 {
		t.Errorf("UnboundedBandwidth %d overflows QEMU's rate limiter", uint64(UnboundedBandwidth))
	}
}
