package clitest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/vmconfig"
)

// BackupHVD is the fake hvd with the backup routes: each POST .../backups answers
// what the test scripted with next (its disks usually point at qemu-nbd servers the
// test runs), finish makes reference points, abort records. It overrides GET
// /1.0/host (firmware and root for restores) and POST /1.0/imports (the test checks
// the restored directory in onImport while it exists).
type BackupHVD struct {
	*FakeHVD

	bmu      sync.Mutex
	Next     func(req api.BackupCreate) api.Operation // the create operation's last state
	onCreate func()                                   // called when a backup is opened
	OnFinish func(id string) error                    // a non-nil error fails the finish
	OnImport func(req api.VMImport) error
	// onIntegration is called when hv reads the VM's integration services, which
	// it does once the repository's writer holds the backup.
	OnIntegration func()
	// noFiles answers the backup's files as an hvd without them does (404).
	NoFiles bool
	// dirs are the VMs' directories, which only this fake hvd reads (hv is
	// shown another Directory, so that a test sees it reads nothing there).
	Dirs     map[string]string
	Open     map[string]api.Backup
	Refs     []api.ReferencePoint
	Finished []string
	Aborted  []string
	creates  []api.BackupCreate
	Imports  []api.VMImport
	Host     api.HostInfo
}

// NewBackupHVD is NewFakeHVD with hvd's backup API: open backups, their NBD exports and files.
func NewBackupHVD(t *testing.T, vms ...api.VM) *BackupHVD {
	t.Helper()
	b := &BackupHVD{FakeHVD: NewFakeHVD(t, vms...), Open: map[string]api.Backup{}, Dirs: map[string]string{}}
	b.Host = api.HostInfo{Version: "0.1.0", APIVersion: "1.0", Hostname: "h1", Accelerator: "tcg"}
	// A second server on a socket of its own, with the backup routes in front of the
	// fake's others; hv talks to it.
	dir, err := os.MkdirTemp("", "hvb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "hvd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(b.routes())
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	b.Socket = sock
	return b
}

func (b *BackupHVD) routes() http.Handler {
	m := http.NewServeMux()
	others := b.FakeHVD.routes()
	m.Handle("/", others)
	m.HandleFunc("GET /1.0/vms/{name}/integration", func(w http.ResponseWriter, r *http.Request) {
		b.bmu.Lock()
		hook := b.OnIntegration
		b.bmu.Unlock()
		if hook != nil {
			hook()
		}
		others.ServeHTTP(w, r)
	})
	m.HandleFunc("GET /1.0/host", func(w http.ResponseWriter, r *http.Request) {
		b.bmu.Lock()
		defer b.bmu.Unlock()
		reply(w, 200, b.Host)
	})
	b.backupRoutes(m)
	b.backupFileRoutes(m)
	m.HandleFunc("POST /1.0/imports", func(w http.ResponseWriter, r *http.Request) {
		var req api.VMImport
		b.decode(r, &req)
		b.record(r)
		b.bmu.Lock()
		b.Imports = append(b.Imports, req)
		check := b.OnImport
		b.bmu.Unlock()
		if check != nil {
			if err := check(req); err != nil {
				reply(w, 202, b.startOp("vm.import", api.Operation{Status: api.OpFailure, ErrorCode: 400, Error: err.Error()}))
				return
			}
		}
		vm := api.VM{Name: req.Name, ID: "id-" + req.Name, State: api.StateOff, Generation: 2}
		b.Mu.Lock()
		b.VMs[req.Name] = vm
		b.Mu.Unlock()
		reply(w, 202, b.startOp("vm.import", api.Operation{Status: api.OpSuccess, Resources: []string{"/1.0/vms/" + req.Name}, Result: vm}))
	})
	return m
}

// backupFiles is what hvd serves beside open backup {backup}: the files the
// configuration in the VM's directory names.
func (b *BackupHVD) backupFiles(w http.ResponseWriter, r *http.Request) (string, []api.BackupFile, bool) {
	vm, ok := b.vm(w, r)
	if !ok {
		return "", nil, false
	}
	b.bmu.Lock()
	_, open := b.Open[r.PathValue("backup")]
	noFiles, dir := b.NoFiles, b.Dirs[vm.Name]
	b.bmu.Unlock()
	switch {
	case noFiles:
		reply(w, 404, api.Error{Error: "no such API path: " + r.Method + " " + r.URL.Path, Code: 404})
		return "", nil, false
	case !open:
		reply(w, 404, api.Error{Error: fmt.Sprintf("backup %s of VM %s is not open", r.PathValue("backup"), vm.Name), Code: 404})
		return "", nil, false
	}
	files := []api.BackupFile{{Name: api.BackupFileConfig, File: vmconfig.FileName}}
	if cfg, _, err := vmconfig.Load(dir); err == nil {
		for _, f := range []api.BackupFile{{Name: api.BackupFileNVRAM, File: cfg.NVRAM}, {Name: api.BackupFileKernel, File: cfg.Kernel}, {Name: api.BackupFileInitrd, File: cfg.Initrd}} {
			if f.File != "" {
				files = append(files, f)
			}
		}
	}
	return dir, files, true
}

// QEMU's tools (Debian's qemu-utils): the tests that need them fail without them,
// as internal/nbd's do.

func qemuTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (Debian package qemu-utils, in scripts/deps.txt): %v", name, err)
	}
	return p
}

func RunQEMU(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, qemuTool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// QEMUNBD serves an image read-only on a unix socket, as hvd's QEMU serves a
// backup's view, until stop (or the test's end).
type QEMUNBD struct {
	Sock string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

func ServeNBD(t *testing.T, export, img string, extra ...string) *QEMUNBD {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvnbd") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &QEMUNBD{Sock: filepath.Join(dir, "nbd.sock"), out: &bytes.Buffer{}, done: make(chan struct{})}
	args := append([]string{"-k", s.Sock, "--read-only", "--persistent", "--shared=8", "-x", export, "-f", "qcow2"}, extra...)
	s.cmd = exec.Command(qemuTool(t, "qemu-nbd"), append(args, img)...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", s.Sock); err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("qemu-nbd %q exited early: %s", args, s.out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen on %s within 10s: %s", s.Sock, s.out)
		}
	}
}

func (s *QEMUNBD) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// backupRoutes serves starting, listing and aborting backups.
func (b *BackupHVD) backupRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /1.0/vms/{name}/backups", func(w http.ResponseWriter, r *http.Request) {
		var req api.BackupCreate
		b.decode(r, &req)
		if _, ok := b.vm(w, r); !ok {
			return
		}
		b.bmu.Lock()
		b.creates = append(b.creates, req)
		next, hook := b.Next, b.onCreate
		b.bmu.Unlock()
		if next == nil {
			reply(w, 503, api.Error{Error: "backups are being built", Code: 503})
			return
		}
		last := next(req)
		var ab api.Backup
		if last.Status == api.OpSuccess {
			ab = last.Result.(api.Backup)
			b.bmu.Lock()
			b.Open[ab.ID] = ab
			b.bmu.Unlock()
		}
		if hook != nil {
			hook()
		}
		reply(w, 202, b.startOp("vm.backup",
			api.Operation{Status: api.OpRunning, Progress: &api.Progress{Stage: "freezing the guest's file systems"}}, last))
	})
	m.HandleFunc("GET /1.0/vms/{name}/backups", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := b.vm(w, r); !ok {
			return
		}
		b.bmu.Lock()
		defer b.bmu.Unlock()
		out := []api.Backup{}
		for _, ab := range b.Open {
			out = append(out, ab)
		}
		reply(w, 200, out)
	})
	m.HandleFunc("DELETE /1.0/vms/{name}/backups/{backup}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := b.vm(w, r); !ok {
			return
		}
		b.bmu.Lock()
		defer b.bmu.Unlock()
		id := r.PathValue("backup")
		if _, ok := b.Open[id]; !ok {
			reply(w, 404, api.Error{Error: fmt.Sprintf("backup %s of VM %s is not open", id, r.PathValue("name")), Code: 404})
			return
		}
		delete(b.Open, id)
		b.Aborted = append(b.Aborted, id)
		reply(w, 200, struct{}{})
	})
}

// backupFileRoutes serves finishing a backup, its files and the change tracking it reads.
func (b *BackupHVD) backupFileRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /1.0/vms/{name}/backups/{backup}/finish", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := b.vm(w, r); !ok {
			return
		}
		b.bmu.Lock()
		defer b.bmu.Unlock()
		id := r.PathValue("backup")
		ab, ok := b.Open[id]
		if !ok {
			reply(w, 404, api.Error{Error: fmt.Sprintf("backup %s is not open", id), Code: 404})
			return
		}
		if b.OnFinish != nil {
			if err := b.OnFinish(id); err != nil {
				reply(w, 500, api.Error{Error: err.Error(), Code: 500})
				return
			}
		}
		delete(b.Open, id)
		b.Finished = append(b.Finished, id)
		rp := api.ReferencePoint{ID: id, Time: ab.Time, Consistency: ab.Consistency}
		for _, d := range ab.Disks {
			rp.Disks = append(rp.Disks, d.Name)
		}
		b.Refs = []api.ReferencePoint{rp} // the newest replaces the older ones, as in hvd
		reply(w, 200, rp)
	})
	m.HandleFunc("GET /1.0/vms/{name}/backups/{backup}/files", func(w http.ResponseWriter, r *http.Request) {
		dir, files, ok := b.backupFiles(w, r)
		if !ok {
			return
		}
		out := []api.BackupFile{}
		for _, f := range files {
			if fi, err := os.Stat(filepath.Join(dir, f.File)); err == nil {
				f.Size = fi.Size()
				out = append(out, f)
			}
		}
		reply(w, 200, out)
	})
	m.HandleFunc("GET /1.0/vms/{name}/backups/{backup}/files/{file}", func(w http.ResponseWriter, r *http.Request) {
		dir, files, ok := b.backupFiles(w, r)
		if !ok {
			return
		}
		for _, f := range files {
			if f.Name != r.PathValue("file") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, f.File))
			if err != nil {
				break
			}
			w.Header().Set("X-Hv-File", f.File)
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(200)
			w.Write(data)
			return
		}
		reply(w, 404, api.Error{Error: fmt.Sprintf("VM %s has no %s file", r.PathValue("name"), r.PathValue("file")), Code: 404})
	})
	m.HandleFunc("GET /1.0/vms/{name}/tracking", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := b.vm(w, r); !ok {
			return
		}
		b.bmu.Lock()
		defer b.bmu.Unlock()
		out := api.ChangeTracking{ReferencePoints: append([]api.ReferencePoint{}, b.Refs...),
			Disks: []api.TrackedDisk{{Name: "root", Tracked: true}, {Name: "data1", Reason: "the dirty bitmap was lost"}}}
		for _, ab := range b.Open {
			out.Open = &ab
		}
		reply(w, 200, out)
	})
}
