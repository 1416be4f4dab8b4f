package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/nbd"
)

// These tests run the client against a fake hvd whose backups point at a real
// qemu-nbd serving a qcow2 image with a persistent dirty bitmap. They need
// Debian's qemu-img, qemu-io and qemu-nbd (qemu-utils) and fail without them.

const (
	kib = 1 << 10
	mib = 1 << 20
)

func TestFullThenIncremental(t *testing.T) {
	img := filepath.Join(t.TempDir(), "root.qcow2")
	out := t.TempDir()
	qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", img, "8M")
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 64k", "-c", "write -P 0xbb 1028k 100k", "-c", "write -P 0xee 5m 64k", img)
	hvd := newFakeHVD(t)

	// A full backup: every allocated extent, the rest left as holes.
	sock, stop := serveNBD(t, img)
	hvd.open(backupDisk{Name: "root", Size: 8 * mib, Socket: sock, Export: "root",
		FullReason: "no reference point was given (since is null)"}, nil)
	if ref := runClient(t, hvd, "-vm", "web1", "-out", out); ref != "b1" {
		t.Fatalf("reference %q, want b1", ref)
	}
	hvd.check(t, nil, true, false)
	stop()
	checkImage(t, out, img)
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(out, "root.img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 2*mib {
		t.Errorf("root.img takes %d bytes on disk for about 256 KiB of data: the holes were written", st.Blocks*512)
	}

	// The guest writes after the reference point: tracked by bitmap b0 at
	// 64 KiB granularity. Zeroes over [0, 64K) must reach the copy too.
	qemu(t, "qemu-img", "bitmap", "--add", "--enable", "-g", "64K", "-f", "qcow2", img, "b0")
	qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -z 0 64k", "-c", "write -P 0xcc 1032k 4k", "-c", "write -P 0xdd 6204k 8k", img)
	dirty := []extent{{0, 64 * kib}, {mib, 64 * kib}, {6 * mib, 128 * kib}}

	sock, stop = serveNBD(t, img, "-B", "b0")
	hvd.open(backupDisk{Name: "root", Size: 8 * mib, Socket: sock, Export: "root",
		Incremental: true, DirtyBitmap: nbd.DirtyBitmap("b0")}, dirty)
	if ref := runClient(t, hvd, "-vm", "web1", "-out", out, "-since", "b1"); ref != "b2" {
		t.Fatalf("reference %q, want b2", ref)
	}
	since := "b1"
	hvd.check(t, &since, true, false)
	checkImage(t, out, img)

	// hvd's JSON list disagrees with block status: the client aborts and
	// leaves the previous image as it was.
	before, err := os.ReadFile(filepath.Join(out, "root.img"))
	if err != nil {
		t.Fatal(err)
	}
	hvd.open(backupDisk{Name: "root", Size: 8 * mib, Socket: sock, Export: "root",
		Incremental: true, DirtyBitmap: nbd.DirtyBitmap("b0")}, dirty[1:])
	var stdout, stderr bytes.Buffer
	err = run(testCtx(t), []string{"-socket", hvd.sock, "-vm", "web1", "-out", out, "-since", "b1"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "NBD block status marks") {
		t.Fatalf("run with a wrong change list: %v, want a disagreement\n%s", err, stderr.String())
	}
	t.Log(err)
	hvd.check(t, &since, false, true)
	if after, err := os.ReadFile(filepath.Join(out, "root.img")); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the failed backup changed root.img (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestOperationFails(t *testing.T) {
	hvd := newFakeHVD(t)
	hvd.fail = "VM web1 is busy with operation vm.stop"
	var stdout, stderr bytes.Buffer
	err := run(testCtx(t), []string{"-socket", hvd.sock, "-vm", "web1", "-out", t.TempDir()}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), hvd.fail) {
		t.Fatalf("got %v, want the operation's error", err)
	}
	hvd.check(t, nil, false, false) // nothing was opened, so nothing to abort
}

// fakeHVD answers the routes the client uses, on a unix socket.
type fakeHVD struct {
	sock string
	fail string // when set, the vm.backup operation fails with it

	mu       sync.Mutex
	seq      int
	current  backup
	changes  []extent
	since    *string // the last POST's since
	finished bool
	aborted  bool
}

func newFakeHVD(t *testing.T) *fakeHVD {
	f := &fakeHVD{sock: filepath.Join(t.TempDir(), "hvd.sock")}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("POST /1.0/vms/web1/backups", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Since *string `json:"since"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			reply(w, 400, map[string]any{"error": err.Error(), "code": 400})
			return
		}
		f.mu.Lock()
		f.since, f.finished, f.aborted = req.Since, false, false
		f.mu.Unlock()
		w.Header().Set("Location", "/1.0/operations/op1")
		reply(w, 202, map[string]any{"id": "op1", "kind": "vm.backup", "status": "running"})
	})
	mux.HandleFunc("GET /1.0/operations/op1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "" {
			t.Error("the client polls without wait")
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.fail != "" {
			reply(w, 200, map[string]any{"id": "op1", "status": "failure", "error": f.fail, "error_code": 409})
			return
		}
		reply(w, 200, map[string]any{"id": "op1", "status": "success", "result": f.current})
	})
	mux.HandleFunc("GET /1.0/vms/web1/backups/{b}/disks/{disk}/changes", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.PathValue("b") != f.current.ID || r.PathValue("disk") != "root" {
			reply(w, 404, map[string]any{"error": "no such backup or disk", "code": 404})
			return
		}
		reply(w, 200, f.changes)
	})
	mux.HandleFunc("POST /1.0/vms/web1/backups/{b}/finish", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.finished = r.PathValue("b") == f.current.ID
		reply(w, 200, map[string]any{"id": f.current.ID, "time": time.Now(), "consistency": "application", "disks": []string{"root"}})
	})
	mux.HandleFunc("DELETE /1.0/vms/web1/backups/{b}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.aborted = r.PathValue("b") == f.current.ID
		reply(w, 200, map[string]any{})
	})
	srv := httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

// open sets up the next backup: one disk, and the change list hvd gives.
func (f *fakeHVD) open(d backupDisk, changes []extent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.current = backup{ID: fmt.Sprintf("b%d", f.seq), Disks: []backupDisk{d}}
	f.changes = changes
}

// check compares what the client did with what it should have.
func (f *fakeHVD) check(t *testing.T, since *string, finished, aborted bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !reflect.DeepEqual(f.since, since) || f.finished != finished || f.aborted != aborted {
		t.Errorf("hvd saw since %v, finish %v, abort %v; want %v, %v, %v", f.since, f.finished, f.aborted, since, finished, aborted)
	}
}

// runClient runs the client and returns the reference point of its last line.
func runClient(t *testing.T, f *fakeHVD, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := run(testCtx(t), append([]string{"-socket", f.sock}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("backup-client %q: %v\n%s", args, err, stderr.String())
	}
	t.Logf("backup-client %q:\n%s%s", args, stderr.String(), stdout.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	ref, ok := strings.CutPrefix(lines[len(lines)-1], "reference ")
	if !ok {
		t.Fatalf("last line %q, want reference <ID>", lines[len(lines)-1])
	}
	return ref
}

// checkImage compares out/root.img with the image's contents as qemu-img
// converts them to raw.
func checkImage(t *testing.T, out, img string) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "want.raw")
	qemu(t, "qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", img, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "root.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("root.img (%d bytes) differs from the disk (%d bytes) at offset %d", len(got), len(want), i)
	}
}

// serveNBD runs qemu-nbd read-only on img (export "root") and returns its
// socket once it accepts, and a function that stops it (so that the image can
// be written again); the test's end stops it too.
func serveNBD(t *testing.T, img string, args ...string) (string, func()) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args = append([]string{"-k", sock, "--read-only", "--persistent", "--shared=4", "-x", "root", "-f", "qcow2"}, args...)
	cmd := exec.Command(tool(t, "qemu-nbd"), append(args, img)...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("qemu-nbd %q did not listen on %s within 10s:\n%s", args, sock, log.String())
		}
	}
}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (Debian package qemu-utils): %v", name, err)
	}
	return p
}

func qemu(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, tool(t, name), args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
