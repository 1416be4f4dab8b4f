package qmp_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/nbd"
	"github.com/hvproject/hv/internal/qmp"
)

// End-to-end runs of the typed commands against the installed QEMU: each
// step checks the effect QEMU reports, not only that it answered.

func dialQEMU(t *testing.T, args ...string) *qmp.Client {
	t.Helper()
	c, err := qmp.Dial(qmp.Ctx(t), qmp.StartQEMU(t, args...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatalf("qemu-img is required for this test: %v", err)
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v: %s", args, err, out)
	}
}

func do(t *testing.T, c qmp.Executor, cmd qmp.Command) {
	t.Helper()
	if err := qmp.Do(qmp.Ctx(t), c, cmd); err != nil {
		t.Fatalf("%s: %v", cmd.Command(), err)
	}
}

func run[R any](t *testing.T, c qmp.Executor, q qmp.Query[R]) R {
	t.Helper()
	r, err := qmp.Run(qmp.Ctx(t), c, q)
	if err != nil {
		t.Fatalf("%s: %v", q.Command(), err)
	}
	return r
}

// blockNode returns the node called name, or nil. Not flat: only then does
// QEMU walk the backing chain (backing_file_depth, image.backing-image).
func blockNode(t *testing.T, c qmp.Executor, name string) *qmp.BlockNode {
	t.Helper()
	return findNode(run(t, c, qmp.QueryNamedBlockNodes{}), name)
}

func findNode(nodes []qmp.BlockNode, name string) *qmp.BlockNode {
	for _, n := range nodes {
		if n.NodeName == name {
			return &n
		}
	}
	return nil
}

// bitmap returns the named bitmap of node, or nil; from a flat query, as hv
// reads bitmaps.
func bitmap(t *testing.T, c qmp.Executor, node, name string) *qmp.DirtyBitmap {
	t.Helper()
	n := findNode(run(t, c, qmp.QueryNamedBlockNodes{Flat: true}), node)
	if n == nil {
		t.Fatalf("no node %s", node)
	}
	for _, b := range n.DirtyBitmaps {
		if b.Name == name {
			return &b
		}
	}
	return nil
}

// hmpWrite writes through QEMU's own qemu-io, as a guest would. QEMU 7.2
// prints qemu-io's report on its stdout, not in the answer: what the write
// did is checked through the bitmaps and NBD reads.
func hmpWrite(t *testing.T, c *qmp.Client, node, what string) {
	t.Helper()
	err := c.Execute(qmp.Ctx(t), "human-monitor-command", map[string]string{"command-line": "qemu-io " + node + ` "` + what + `"`}, nil)
	if err != nil {
		t.Fatalf("qemu-io %s %q: %v", node, what, err)
	}
}

// waitEvent returns the first event that match accepts, decoded.
func waitEvent[T qmp.EventData](t *testing.T, events <-chan qmp.Event, match func(T) bool) T {
	t.Helper()
	var zero T
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("connection ended waiting for %s", zero.EventName())
			}
			if ev.Name != zero.EventName() {
				continue
			}
			d, err := qmp.DecodeEvent[T](ev)
			if err != nil {
				t.Fatal(err)
			}
			if match == nil || match(d) {
				return d
			}
		case <-timeout:
			t.Fatalf("no %s within 60s", zero.EventName())
		}
	}
}

func jobStatus(id string, status qmp.JobStatus) func(qmp.JobStatusChangeEvent) bool {
	return func(e qmp.JobStatusChangeEvent) bool { return e.ID == id && e.Status == status }
}

func findJob(t *testing.T, c qmp.Executor, id string) *qmp.Job {
	t.Helper()
	for _, j := range run(t, c, qmp.QueryJobs{}) {
		if j.ID == id {
			return &j
		}
	}
	return nil
}

// TestTypedIntrospectionRealQEMU: the answers CPU compatibility checks and
// version checks read decode, with the values this QEMU has.
func TestTypedIntrospectionRealQEMU(t *testing.T) {
	c := dialQEMU(t)
	v := run(t, c, qmp.QueryVersion{})
	if g := c.Version(); v.QEMU.Major != g.Major || v.QEMU.Minor != g.Minor || v.QEMU.Micro != g.Micro || v.Package != g.Package {
		t.Errorf("query-version %+v, greeting %+v", v, g)
	}
	if st := run(t, c, qmp.QueryStatus{}); st.Status != "prelaunch" || st.Running {
		t.Errorf("query-status = %+v", st)
	}
	machines := run(t, c, qmp.QueryMachines{})
	if !slices.ContainsFunc(machines, func(m qmp.MachineInfo) bool { return m.Alias == "q35" && m.CPUMax > 1 && m.HotpluggableCPUs }) {
		t.Errorf("no q35 alias with hot-pluggable CPUs among %d machines", len(machines))
	}
	defs := run(t, c, qmp.QueryCPUDefinitions{})
	i := slices.IndexFunc(defs, func(d qmp.CPUDefinition) bool { return d.Name == "qemu64" })
	if i < 0 || defs[i].Typename != "qemu64-x86_64-cpu" || !defs[i].MigrationSafe || defs[i].UnavailableFeatures == nil {
		t.Errorf("qemu64 in query-cpu-definitions: %+v", defs[max(i, 0)])
	}
	// "host" needs KVM; under TCG QEMU says so.
	if i := slices.IndexFunc(defs, func(d qmp.CPUDefinition) bool { return d.Name == "host" }); i < 0 || !slices.Contains(defs[i].UnavailableFeatures, "kvm") {
		t.Errorf("host CPU under TCG: %+v", defs[max(i, 0)])
	}
	exp := run(t, c, qmp.QueryCPUModelExpansion{Type: "full", Model: qmp.CPUModel{Name: "qemu64", Props: map[string]any{"sse4.2": true}}})
	if exp.Model.Name != "qemu64" || exp.Model.Props["lm"] != true || exp.Model.Props["sse4.2"] != true || len(exp.Model.Props) < 100 {
		t.Errorf("expansion of qemu64 with sse4.2: %s, %d props, lm=%v sse4.2=%v", exp.Model.Name, len(exp.Model.Props), exp.Model.Props["lm"], exp.Model.Props["sse4.2"])
	}
	// QEMU's own error answers keep their class through Run.
	_, err := qmp.Run(qmp.Ctx(t), c, qmp.QueryCPUModelExpansion{Type: "full", Model: qmp.CPUModel{Name: "no-such-cpu"}})
	var qe *qmp.Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || !strings.HasPrefix(err.Error(), "qmp query-cpu-model-expansion: ") {
		t.Errorf("expanding an unknown model: %v", err)
	}
}

// TestTypedBlockRealQEMU runs the block commands hv uses, as a checkpoint,
// a backup and a merge use them, and a disk mirror as migration will.
func TestTypedBlockRealQEMU(t *testing.T) {
	dir := t.TempDir()
	img := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		qemuImg(t, append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "1M")...)
		return p
	}
	base := img("base.qcow2")
	// Two images whose headers name base.qcow2.
	top := img("top.qcow2", "-b", base, "-F", "qcow2")
	hdr := img("hdr.qcow2", "-b", base, "-F", "qcow2")
	c := dialQEMU(t, "-machine", "pc")
	events, stop := c.Subscribe()
	defer stop()

	// A qcow2 node over a file node, with "backing": null: QEMU opens no
	// backing file though the header names one.
	do(t, c, qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: "f-top", Filename: top}})
	do(t, c, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "top", File: qmp.BlockdevRef{Name: "f-top"}}})
	n := blockNode(t, c, "top")
	if n == nil || n.Drv != "qcow2" || n.RO || n.BackingFileDepth != 0 || n.Image.BackingImage != nil ||
		n.Image.VirtualSize != 1<<20 || n.Image.ClusterSize != 65536 {
		t.Fatalf("node top = %+v", n)
	}
	// Following the header, as BackingFromHeader asks, opens base.qcow2.
	do(t, c, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "hdr", ReadOnly: true, BackingFromHeader: true,
		File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: "f-hdr", Filename: hdr, ReadOnly: true}}}})
	if n := blockNode(t, c, "hdr"); n == nil || !n.RO || n.BackingFileDepth != 1 || n.Image.BackingImage == nil || n.Image.BackingImage.Filename != base {
		t.Fatalf("node hdr = %+v", n)
	}

	// Bitmaps added in one transaction; a write dirties the recording one.
	do(t, c, qmp.Transaction{Actions: []qmp.Action{
		qmp.BlockDirtyBitmapAdd{Node: "top", Name: "b1", Granularity: 65536, Persistent: true},
		qmp.BlockDirtyBitmapAdd{Node: "top", Name: "b2", Disabled: true},
		qmp.BlockDirtyBitmapAdd{Node: "top", Name: "b3", Disabled: true},
	}})
	hmpWrite(t, c, "top", "write -P 0xab 0 64k")
	if b := bitmap(t, c, "top", "b1"); b == nil || b.Count != 65536 || !b.Recording || !b.Persistent || b.Granularity != 65536 {
		t.Errorf("b1 after a write = %+v", b)
	}
	if b := bitmap(t, c, "top", "b2"); b == nil || b.Count != 0 || b.Recording || b.Persistent {
		t.Errorf("disabled b2 after a write = %+v", b)
	}
	// Merges by name and by node and name.
	do(t, c, qmp.Transaction{Actions: []qmp.Action{
		qmp.BlockDirtyBitmapMerge{Node: "top", Target: "b2", Bitmaps: []qmp.BitmapRef{{Name: "b1"}}},
		qmp.BlockDirtyBitmapMerge{Node: "top", Target: "b3", Bitmaps: []qmp.BitmapRef{{Node: "top", Name: "b1"}}},
	}})
	for _, name := range []string{"b2", "b3"} {
		if b := bitmap(t, c, "top", name); b == nil || b.Count != 65536 || b.Recording {
			t.Errorf("%s after the merge = %+v", name, b)
		}
	}
	// All or nothing: an aborted transaction adds nothing, and the error
	// is QEMU's.
	err := qmp.Do(qmp.Ctx(t), c, qmp.Transaction{Actions: []qmp.Action{qmp.BlockDirtyBitmapAdd{Node: "top", Name: "never"}, qmp.AbortAction{}}})
	var qe *qmp.Error
	if !errors.As(err, &qe) || !strings.HasPrefix(err.Error(), "qmp transaction: ") {
		t.Errorf("aborted transaction = %v", err)
	}
	if b := bitmap(t, c, "top", "never"); b != nil {
		t.Errorf("an aborted transaction added %+v", b)
	}
	do(t, c, qmp.BlockDirtyBitmapRemove{Node: "top", Name: "b3"})
	if b := bitmap(t, c, "top", "b3"); b != nil {
		t.Errorf("b3 after remove = %+v", b)
	}

	// A checkpoint: the overlay (its file node defined in place) becomes
	// the top, and takes b1 over in the same transaction.
	ov := img("ov.qcow2")
	do(t, c, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "ov", File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: "f-ov", Filename: ov}}}})
	do(t, c, qmp.Transaction{Actions: []qmp.Action{
		qmp.BlockdevSnapshot{Node: "top", Overlay: "ov"},
		qmp.BlockDirtyBitmapAdd{Node: "ov", Name: "b1", Persistent: true, Granularity: 65536},
		qmp.BlockDirtyBitmapMerge{Node: "ov", Target: "b1", Bitmaps: []qmp.BitmapRef{{Node: "top", Name: "b1"}}},
	}})
	// top was opened with "backing": null, so QEMU names it by a json:
	// description holding its file name.
	if n := blockNode(t, c, "ov"); n == nil || n.BackingFileDepth != 1 || n.Image.BackingImage == nil || !strings.Contains(n.Image.BackingImage.Filename, top) {
		t.Fatalf("overlay after blockdev-snapshot = %+v", n)
	}
	if b := bitmap(t, c, "ov", "b1"); b == nil || b.Count != 65536 || !b.Persistent {
		t.Errorf("b1 carried over = %+v", b)
	}

	// The backup export: NBD on a unix socket with the bitmap, read back
	// with hv's NBD client.
	sock := filepath.Join(dir, "nbd.sock")
	do(t, c, qmp.NBDServerStart{Addr: qmp.UnixSocket(sock)})
	do(t, c, qmp.BlockExportAdd{Export: qmp.NBDExport{ID: "e", NodeName: "ov", Name: "data", Bitmaps: []qmp.BitmapRef{{Node: "ov", Name: "b1"}}}})
	if exps := run(t, c, qmp.QueryBlockExports{}); len(exps) != 1 || exps[0] != (qmp.BlockExport{ID: "e", Type: "nbd", NodeName: "ov"}) {
		t.Errorf("query-block-exports = %+v", exps)
	}
	if b := bitmap(t, c, "ov", "b1"); b == nil || !b.Busy {
		t.Errorf("an exported bitmap is busy: %+v", b)
	}
	nc, err := nbd.Dial(qmp.Ctx(t), "unix", sock, nbd.Options{Export: "data", MetaContexts: []string{nbd.DirtyBitmap("b1")}})
	if err != nil {
		t.Fatal(err)
	}
	exts, err := nc.Extents(qmp.Ctx(t), nbd.DirtyBitmap("b1"))
	if err != nil {
		t.Fatal(err)
	}
	if dirty := nbd.Select(exts, 1, 1); len(dirty) != 1 || dirty[0].Offset != 0 || dirty[0].Length != 65536 {
		t.Errorf("dirty extents over NBD = %+v (all: %+v)", dirty, exts)
	}
	data, err := nc.Read(qmp.Ctx(t), 0, 4)
	if err != nil || !bytes.Equal(data, []byte{0xab, 0xab, 0xab, 0xab}) {
		t.Errorf("read through the overlay = %x, %v", data, err)
	}
	nc.Close()
	do(t, c, qmp.BlockExportDel{ID: "e", Mode: "hard"})
	for len(run(t, c, qmp.QueryBlockExports{})) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	do(t, c, qmp.NBDServerStop{})
	if _, err := os.Stat(sock); err == nil {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			t.Error("NBD server still listening after nbd-server-stop")
		}
	}

	// A disk mirror, as migration copies a disk: ready, then completed.
	mir := img("mir.qcow2")
	do(t, c, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "mir", File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: "f-mir", Filename: mir}}}})
	no := false
	do(t, c, qmp.BlockdevMirror{JobID: "m", Device: "ov", Target: "mir", Sync: qmp.SyncFull, AutoDismiss: &no})
	if r := waitEvent(t, events, func(e qmp.BlockJobReadyEvent) bool { return e.Device == "m" }); r.Type != "mirror" || r.Len != r.Offset {
		t.Errorf("BLOCK_JOB_READY = %+v", r)
	}
	if j := findJob(t, c, "m"); j == nil || j.Status != qmp.JobReady || j.Type != "mirror" || j.CurrentProgress != j.TotalProgress {
		t.Errorf("query-jobs of a ready mirror: %+v", j)
	}
	do(t, c, qmp.JobComplete{ID: "m"})
	if done := waitEvent(t, events, func(e qmp.BlockJobCompletedEvent) bool { return e.Device == "m" }); done.Error != "" {
		t.Errorf("mirror completed with %q", done.Error)
	}
	waitEvent(t, events, jobStatus("m", qmp.JobConcluded))
	do(t, c, qmp.JobDismiss{ID: "m"})
	if j := findJob(t, c, "m"); j != nil {
		t.Errorf("job m after job-dismiss: %+v", j)
	}
	// The mirror copied the whole chain: mir reads what was written to top.
	do(t, c, qmp.NBDServerStart{Addr: qmp.UnixSocket(sock)})
	do(t, c, qmp.BlockExportAdd{Export: qmp.NBDExport{ID: "e2", NodeName: "mir"}})
	if nc, err := nbd.Dial(qmp.Ctx(t), "unix", sock, nbd.Options{Export: "mir"}); err != nil {
		t.Error(err)
	} else {
		if data, err := nc.Read(qmp.Ctx(t), 0, 4); err != nil || !bytes.Equal(data, []byte{0xab, 0xab, 0xab, 0xab}) {
			t.Errorf("read from the mirror's target = %x, %v", data, err)
		}
		nc.Close()
	}
	do(t, c, qmp.BlockExportDel{ID: "e2", Mode: "hard"})
	for len(run(t, c, qmp.QueryBlockExports{})) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	do(t, c, qmp.NBDServerStop{})

	// A merge: the overlay absorbs top, waits for job-finalize, is
	// dismissed, and no longer backs on anything.
	do(t, c, qmp.BlockStream{JobID: "s", Device: "ov", AutoFinalize: &no, AutoDismiss: &no})
	waitEvent(t, events, jobStatus("s", qmp.JobPending))
	do(t, c, qmp.JobFinalize{ID: "s"})
	waitEvent(t, events, jobStatus("s", qmp.JobConcluded))
	if j := findJob(t, c, "s"); j == nil || j.Type != "stream" || j.Error != "" {
		t.Errorf("concluded stream: %+v", j)
	}
	do(t, c, qmp.JobDismiss{ID: "s"})
	if n := blockNode(t, c, "ov"); n == nil || n.BackingFileDepth != 0 {
		t.Errorf("overlay after the merge = %+v", n)
	}

	// A backup's point in time: a fleece backed by the active node, filled
	// by a sync=none job started in a transaction, ended by a cancel.
	fl := img("fl.qcow2")
	do(t, c, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "fl", Backing: "mir", File: qmp.BlockdevRef{Node: qmp.FileNode{NodeName: "f-fl", Filename: fl}}}})
	if n := blockNode(t, c, "fl"); n == nil || n.BackingFileDepth != 1 {
		t.Fatalf("fleece node = %+v", n)
	}
	do(t, c, qmp.Transaction{Actions: []qmp.Action{qmp.BlockdevBackup{JobID: "fb", Device: "mir", Target: "fl", Sync: qmp.SyncNone, AutoDismiss: &no}}})
	if j := findJob(t, c, "fb"); j == nil || j.Type != "backup" {
		t.Fatalf("backup job: %+v", j)
	}
	do(t, c, qmp.BlockJobCancel{Device: "fb", Force: true})
	if ev := waitEvent(t, events, func(e qmp.BlockJobCancelledEvent) bool { return e.Device == "fb" }); ev.Type != "backup" {
		t.Errorf("BLOCK_JOB_CANCELLED = %+v", ev)
	}
	waitEvent(t, events, jobStatus("fb", qmp.JobConcluded))
	do(t, c, qmp.JobDismiss{ID: "fb"})

	// A disk for the guest: the device holds the node, and query-block
	// shows which node it writes to.
	do(t, c, qmp.DeviceAdd{Driver: "virtio-blk-pci", ID: "vd0", Drive: "mir", Props: map[string]any{"serial": "hv-test"}})
	blocks := run(t, c, qmp.QueryBlock{})
	i := slices.IndexFunc(blocks, func(b qmp.BlockInfo) bool { return strings.Contains(b.QDev, "vd0") })
	if i < 0 || blocks[i].Inserted == nil || blocks[i].Inserted.NodeName != "mir" {
		t.Errorf("query-block = %+v", blocks)
	}
	if err := qmp.Do(qmp.Ctx(t), c, qmp.BlockdevDel{NodeName: "mir"}); err == nil {
		t.Error("blockdev-del of a node a device uses succeeded")
	}

	// Nodes nothing uses close. A file node defined in place belongs to its
	// parent and goes with it; one added on its own stays until deleted.
	gone := func(nodes ...string) {
		t.Helper()
		all := run(t, c, qmp.QueryNamedBlockNodes{Flat: true})
		for _, n := range nodes {
			if findNode(all, n) != nil {
				t.Errorf("node %s still open", n)
			}
		}
	}
	do(t, c, qmp.BlockdevDel{NodeName: "fl"})
	do(t, c, qmp.BlockdevDel{NodeName: "hdr"})
	gone("fl", "f-fl", "hdr", "f-hdr")
	do(t, c, qmp.BlockdevDel{NodeName: "top"}) // the merge left it unused
	if findNode(run(t, c, qmp.QueryNamedBlockNodes{Flat: true}), "f-top") == nil {
		t.Error("f-top, added on its own, went with top")
	}
	do(t, c, qmp.BlockdevDel{NodeName: "f-top"})
	gone("top", "f-top")
	err = qmp.Do(qmp.Ctx(t), c, qmp.BlockdevDel{NodeName: "f-fl"})
	if !errors.As(err, &qe) || !strings.Contains(qe.Desc, "f-fl") {
		t.Errorf("blockdev-del of a node gone with its parent = %v", err)
	}
}

// TestTypedMemoryRealQEMU: balloon, QOM and memory queries on a machine
// with a balloon device.
func TestTypedMemoryRealQEMU(t *testing.T) {
	c := dialQEMU(t, "-machine", "pc", "-m", "256M")
	if s := run(t, c, qmp.QueryMemorySizeSummary{}); s.BaseMemory != 256<<20 || s.PluggedMemory != 0 {
		t.Errorf("query-memory-size-summary = %+v", s)
	}
	_, err := qmp.Run(qmp.Ctx(t), c, qmp.QueryBalloon{})
	var qe *qmp.Error
	if !errors.As(err, &qe) {
		t.Errorf("query-balloon without a balloon = %v", err)
	}
	do(t, c, qmp.DeviceAdd{Driver: "virtio-balloon-pci", ID: "balloon0"})
	if b := run(t, c, qmp.QueryBalloon{}); b.Actual != 256<<20 {
		t.Errorf("query-balloon = %+v", b)
	}
	do(t, c, qmp.QomSet{Path: "balloon0", Property: "guest-stats-polling-interval", Value: 2})
	if n := run(t, c, qmp.QomGet[int]{Path: "balloon0", Property: "guest-stats-polling-interval"}); n != 2 {
		t.Errorf("polling interval read back as %d", n)
	}
	// No guest runs: every statistic is QEMU's "not sent", 2^64-1.
	st := run(t, c, qmp.QomGet[qmp.GuestStats]{Path: "balloon0", Property: "guest-stats"})
	if st.LastUpdate != 0 || len(st.Stats) < 5 || st.Stats["stat-total-memory"] != math.MaxUint64 {
		t.Errorf("guest-stats = %+v", st)
	}
	do(t, c, qmp.Balloon{Value: 128 << 20})
	// A property of the wrong type is QEMU's error, not a zero value.
	if _, err := qmp.Run(qmp.Ctx(t), c, qmp.QomGet[uint64]{Path: "balloon0", Property: "no-such-property"}); !errors.As(err, &qe) {
		t.Errorf("qom-get of a missing property = %v", err)
	}
	err = qmp.Do(qmp.Ctx(t), c, qmp.DeviceDel{ID: "no-such-device"})
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("device_del of an unknown device = %v", err)
	}
}

// writeTLSDir writes a CA and a server and a client certificate for
// "localhost" as QEMU's tls-creds-x509 reads them from one directory.
func writeTLSDir(t *testing.T, dir string) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey := key()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hv test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca-cert.pem", "CERTIFICATE", caDER)
	for i, role := range []string{"server", "client"} {
		k := key()
		usage := x509.ExtKeyUsageServerAuth
		if role == "client" {
			usage = x509.ExtKeyUsageClientAuth
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(role+"-cert.pem", "CERTIFICATE", der)
		write(role+"-key.pem", "PRIVATE KEY", kder)
	}
}

// TestTypedMigrationRealQEMU migrates between two QEMUs as hv will between
// hosts: capabilities on both sides, TLS both ways for the state and for
// the disk, the disk mirrored over NBD before the state moves, its change
// tracking carried along, the source pausing before switch-over until the
// mirror is done. A first migration into a descriptor is cancelled at that
// pause.
func TestTypedMigrationRealQEMU(t *testing.T) {
	dir := t.TempDir()
	src := dialQEMU(t)
	dst := dialQEMU(t, "-incoming", "defer")
	srcEvents, stop := src.Subscribe()
	defer stop()
	no := false

	caps := []qmp.MigrationCapabilityStatus{
		{Capability: qmp.CapEvents, State: true},
		{Capability: qmp.CapDirtyBitmaps, State: true},
		{Capability: qmp.CapPauseBeforeSwitchover, State: true},
		{Capability: qmp.CapAutoConverge, State: true},
		{Capability: qmp.CapPostcopyRAM, State: false},
	}
	for _, c := range []*qmp.Client{src, dst} {
		do(t, c, qmp.MigrateSetCapabilities{Capabilities: caps})
		got := run(t, c, qmp.QueryMigrateCapabilities{})
		for _, want := range caps {
			if !slices.Contains(got, want) {
				t.Errorf("capability %s not %v: %+v", want.Capability, want.State, got)
			}
		}
	}
	bw, downtime, channels := uint64(512<<20), uint64(500), 3
	do(t, src, qmp.MigrateSetParameters{MaxBandwidth: &bw, DowntimeLimit: &downtime, MultifdChannels: &channels})
	if p := run(t, src, qmp.QueryMigrateParameters{}); p.MaxBandwidth != bw || p.DowntimeLimit != downtime || p.MultifdChannels != channels || p.TLSCreds != "" {
		t.Errorf("query-migrate-parameters = %+v", p)
	}
	if m := run(t, src, qmp.QueryMigrate{}); m.Status != "" {
		t.Errorf("query-migrate before any migration = %+v", m)
	}

	// The guest's disk, tracked by a bitmap, and the alias its bitmap
	// travels under. The bitmap must exist before the first migration
	// attempt: QEMU 7.2 remembers that a source had no bitmaps to migrate
	// (init_dirty_bitmap_migration sets no_bitmaps and nothing clears it),
	// and later attempts from that process then carry none.
	srcImg, dstImg := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", srcImg, "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", dstImg, "1M")
	mapping := []qmp.BitmapMigrationNode{{NodeName: "disk", Alias: "disk0", Bitmaps: []qmp.BitmapMigrationBitmap{{Name: "hv-ref", Alias: "ref"}}}}
	do(t, src, qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: "f-disk", Filename: srcImg}})
	do(t, src, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "disk", File: qmp.BlockdevRef{Name: "f-disk"}}})
	do(t, src, qmp.MigrateSetParameters{BlockBitmapMapping: mapping})
	do(t, src, qmp.BlockDirtyBitmapAdd{Node: "disk", Name: "hv-ref"})
	hmpWrite(t, src, "disk", "write -P 0xcd 0 64k")

	// Into a descriptor that only drains: paused before switch-over, then
	// cancelled.
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "sink"), os.NewFile(uintptr(fds[1]), "sink-qemu")
	defer ours.Close()
	go io.Copy(io.Discard, ours)
	do(t, src, qmp.GetFD{Name: "sink", File: theirs})
	theirs.Close()
	do(t, src, qmp.Migrate{URI: "fd:sink"})
	var statuses []qmp.MigrationStatus
	waitEvent(t, srcEvents, func(e qmp.MigrationEvent) bool {
		statuses = append(statuses, e.Status)
		return e.Status == qmp.MigrationPreSwitchover
	})
	if m := run(t, src, qmp.QueryMigrate{}); m.Status != qmp.MigrationPreSwitchover {
		t.Errorf("query-migrate at the pause = %+v", m)
	}
	do(t, src, qmp.MigrateCancel{})
	waitEvent(t, srcEvents, func(e qmp.MigrationEvent) bool { return e.Status == qmp.MigrationCancelled })
	if m := run(t, src, qmp.QueryMigrate{}); m.Status != qmp.MigrationCancelled {
		t.Errorf("query-migrate after migrate_cancel = %+v", m)
	}
	// QEMU migrates a guest a cancelled migration left stopped only once
	// it runs again (hv's save does the same cont).
	if st := run(t, src, qmp.QueryStatus{}); st.Running {
		t.Errorf("source after the cancel: %+v", st)
	}
	do(t, src, qmp.Cont{})
	waitEvent[qmp.ResumeEvent](t, srcEvents, nil)
	if !slices.Contains(statuses, qmp.MigrationSetup) || !slices.Contains(statuses, qmp.MigrationActive) {
		t.Errorf("MIGRATION events before the pause: %v", statuses)
	}

	// To the destination, over TLS with certificates checked both ways.
	writeTLSDir(t, dir)
	yes := true
	do(t, src, qmp.ObjectAdd{Object: qmp.TLSCredsX509{ID: "tls0", Dir: dir, Endpoint: "client"}})
	do(t, dst, qmp.ObjectAdd{Object: qmp.TLSCredsX509{ID: "tls0", Dir: dir, Endpoint: "server", VerifyPeer: &yes}})
	if vp := run(t, dst, qmp.QomGet[bool]{Path: "/objects/tls0", Property: "verify-peer"}); !vp {
		t.Error("verify-peer of the server's credentials reads false")
	}
	creds, host := "tls0", "localhost"
	do(t, src, qmp.MigrateSetParameters{TLSCreds: &creds, TLSHostname: &host})
	do(t, dst, qmp.MigrateSetParameters{TLSCreds: &creds})
	if p := run(t, src, qmp.QueryMigrateParameters{}); p.TLSCreds != "tls0" || p.TLSHostname != "localhost" || p.MaxBandwidth != bw {
		t.Errorf("parameters with TLS = %+v", p)
	}

	// The disk moves first, as between hosts without shared storage: the
	// destination exports its empty disk over NBD with TLS, the source
	// mirrors into it while the guest writes, and the disk's change
	// tracking travels with the migration under an alias.
	do(t, dst, qmp.BlockdevAdd{Node: qmp.FileNode{NodeName: "f-disk", Filename: dstImg}})
	do(t, dst, qmp.BlockdevAdd{Node: qmp.Qcow2Node{NodeName: "disk", File: qmp.BlockdevRef{Name: "f-disk"}}})
	do(t, dst, qmp.MigrateSetParameters{BlockBitmapMapping: mapping})
	nbdSock := filepath.Join(dir, "dst-nbd.sock")
	do(t, dst, qmp.NBDServerStart{Addr: qmp.UnixSocket(nbdSock), TLSCreds: "tls0"})
	do(t, dst, qmp.BlockExportAdd{Export: qmp.NBDExport{ID: "disk", NodeName: "disk", Writable: true}})
	do(t, src, qmp.BlockdevAdd{Node: qmp.NBDNode{NodeName: "remote", Server: qmp.UnixSocket(nbdSock), Export: "disk",
		TLSCreds: "tls0", TLSHostname: "localhost"}})
	if n := blockNode(t, src, "remote"); n == nil || n.Drv != "nbd" || n.Image.VirtualSize != 1<<20 {
		t.Fatalf("NBD client node = %+v", n)
	}
	do(t, src, qmp.BlockdevMirror{JobID: "move-disk", Device: "disk", Target: "remote", Sync: qmp.SyncFull, AutoDismiss: &no})
	waitEvent(t, srcEvents, func(e qmp.BlockJobReadyEvent) bool { return e.Device == "move-disk" })
	hmpWrite(t, src, "disk", "write -P 0xef 128k 64k") // mirrored as it happens

	sock := filepath.Join(dir, "migrate.sock")
	do(t, dst, qmp.MigrateIncoming{URI: "unix:" + sock})
	if m := run(t, dst, qmp.QueryMigrate{}); !slices.ContainsFunc(m.SocketAddress, func(a qmp.SocketAddress) bool { return a.Type == "unix" && a.Path == sock }) {
		t.Errorf("query-migrate of the waiting destination = %+v", m)
	}
	do(t, src, qmp.Migrate{URI: "unix:" + sock})
	waitEvent(t, srcEvents, func(e qmp.MigrationEvent) bool { return e.Status == qmp.MigrationPreSwitchover })
	// The guest is stopped: end the mirror without switching the source
	// over to it (a graceful cancel of a ready mirror completes it).
	do(t, src, qmp.BlockJobCancel{Device: "move-disk"})
	if done := waitEvent(t, srcEvents, func(e qmp.BlockJobCompletedEvent) bool { return e.Device == "move-disk" }); done.Error != "" || done.Offset != done.Len || done.Len <= 1<<20 {
		// len counts what was written during the mirror again.
		t.Errorf("mirror at switch-over: %+v", done)
	}
	do(t, src, qmp.JobDismiss{ID: "move-disk"})
	do(t, src, qmp.MigrateContinue{State: qmp.MigrationPreSwitchover})
	waitEvent(t, srcEvents, func(e qmp.MigrationEvent) bool { return e.Status == qmp.MigrationCompleted })
	if m := run(t, src, qmp.QueryMigrate{}); m.Status != qmp.MigrationCompleted || m.RAM == nil {
		t.Errorf("query-migrate after completion = %+v", m)
	}
	deadline := time.Now().Add(30 * time.Second)
	for run(t, dst, qmp.QueryMigrate{}).Status != qmp.MigrationCompleted {
		if time.Now().After(deadline) {
			t.Fatalf("destination never completed: %+v", run(t, dst, qmp.QueryMigrate{}))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := run(t, src, qmp.QueryStatus{}); st.Status != "postmigrate" {
		t.Errorf("source after the migration: %+v", st)
	}
	// The source's client goes first: a safe block-export-del refuses while
	// a client is connected.
	if err := qmp.Do(qmp.Ctx(t), dst, qmp.BlockExportDel{ID: "disk"}); err == nil || !strings.Contains(err.Error(), "still in use") {
		t.Errorf("safe block-export-del with a client connected = %v", err)
	}
	do(t, src, qmp.BlockdevDel{NodeName: "remote"})
	do(t, dst, qmp.BlockExportDel{ID: "disk"})
	for len(run(t, dst, qmp.QueryBlockExports{})) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	do(t, dst, qmp.NBDServerStop{})
	if b := bitmap(t, dst, "disk", "hv-ref"); b == nil || b.Count != 128<<10 || !b.Recording {
		t.Errorf("change tracking on the destination = %+v", b)
	}
	// The images match, the write during the mirror included.
	qemuImg(t, "compare", "-U", "-q", "-f", "qcow2", "-F", "qcow2", srcImg, dstImg)
	dstEvents, stopDst := dst.Subscribe()
	defer stopDst()
	do(t, dst, qmp.Cont{})
	waitEvent[qmp.ResumeEvent](t, dstEvents, nil)
	if st := run(t, dst, qmp.QueryStatus{}); st.Status != "running" {
		t.Errorf("destination after cont: %+v", st)
	}
	do(t, dst, qmp.Stop{})
	waitEvent[qmp.StopEvent](t, dstEvents, nil)
	do(t, dst, qmp.Quit{})
	if sd := waitEvent[qmp.ShutdownEvent](t, dstEvents, nil); sd != (qmp.ShutdownEvent{Guest: false, Reason: "host-qmp-quit"}) {
		t.Errorf("SHUTDOWN after quit = %+v", sd)
	}

	// TLS off again, then the credentials can go.
	off := ""
	do(t, src, qmp.MigrateSetParameters{TLSCreds: &off})
	do(t, src, qmp.ObjectDel{ID: "tls0"})
	if p := run(t, src, qmp.QueryMigrateParameters{}); p.TLSCreds != "" {
		t.Errorf("tls-creds after clearing = %q", p.TLSCreds)
	}
	if _, err := qmp.Run(qmp.Ctx(t), src, qmp.QomGet[bool]{Path: "/objects/tls0", Property: "verify-peer"}); err == nil {
		t.Error("tls0 still there after object-del")
	}
}
