package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli"
	"github.com/hvproject/hv/internal/cli/backupcmd"
	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/backuprepo"
	"github.com/hvproject/hv/internal/vmconfig"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// backupVM is a VM of the fake hvd with real disks: qcow2 images that qemu-nbd
// serves as hvd's QEMU would serve a backup's view, and a directory with its
// configuration and UEFI variables.
type backupVM struct {
	t     *testing.T
	vm    api.VM
	dir   string
	nvram []byte
	sizes map[string]int64
	clock time.Time // the point in time of the next backup
}

func newBackupVM(t *testing.T) *backupVM {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "web1")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	v := &backupVM{t: t, dir: dir, sizes: map[string]int64{"root": 4 * mib, "data1": 3*mib + 512*kib},
		clock: time.Now().UTC().Add(-time.Hour)}
	cfg := vmconfig.Config{Name: "web1", ID: "0b0e5f1c-0000-4000-8000-00000000e0b1", Generation: 2, CPUs: 2, MemoryBytes: 512 * mib, MaxMemoryBytes: 512 * mib,
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}, {Name: "data1", File: "data1.qcow2", Format: "qcow2", Bus: "hp1"}},
		NVRAM: "nvram.fd", NICs: []vmconfig.NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:12:34:56", Bus: "hp0"}},
		KVP: map[string]string{"role": "web"}, CreatedAt: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	if err := vmconfig.Save(dir, cfg); err != nil {
		t.Fatal(err)
	}
	v.nvram = bytes.Repeat([]byte("UEFI vars "), 6000)
	if err := os.WriteFile(filepath.Join(dir, "nvram.fd"), v.nvram, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.Disks {
		clitest.RunQEMU(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", v.img(d.Name), fmt.Sprint(v.sizes[d.Name]))
	}
	// hvd's directory as hvd shows it: hv must read nothing there (the fake
	// hvd serves the files from dir).
	v.vm = api.VM{Name: "web1", ID: "0b0e5f1c-0000-4000-8000-00000000e0b1", Generation: 2, State: api.StateRunning, CPUs: 2, MemoryBytes: 512 * mib, Directory: "/nonexistent/hvd/vms/web1",
		Disks: []api.Disk{{Name: "root", Path: v.img("root"), Format: "qcow2", Boot: true}, {Name: "data1", Path: v.img("data1"), Format: "qcow2"}},
		NICs:  []api.NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:12:34:56"}}}
	return v
}

func (v *backupVM) img(disk string) string { return filepath.Join(v.dir, disk+".qcow2") }

// write runs qemu-io commands on a disk ("write -P 0xaa 0 64k").
func (v *backupVM) write(disk string, cmds ...string) {
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	clitest.RunQEMU(v.t, "qemu-io", append(args, v.img(disk))...)
}

// snapshot keeps a disk's bytes as they are now, as a raw file.
func (v *backupVM) snapshot(disk string) string {
	out := filepath.Join(v.t.TempDir(), disk+".raw")
	clitest.RunQEMU(v.t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", v.img(disk), out)
	return out
}

// open serves each disk over NBD (with bitmap b1 when incremental names the disk)
// and returns the backup hvd would describe.
func (v *backupVM) open(id, since string, incremental map[string]bool) (api.Backup, func()) {
	v.clock = v.clock.Add(time.Minute)
	ab := api.Backup{ID: id, VM: "web1", VMID: "0b0e5f1c-0000-4000-8000-00000000e0b1", Time: v.clock, Since: since,
		Consistency: api.ConsistencyApplication, FrozenSeconds: 0.25, Online: true}
	var servers []*clitest.QEMUNBD
	for _, name := range []string{"root", "data1"} {
		d := api.BackupDisk{Name: name, Size: v.sizes[name], Export: "hv-" + name}
		var extra []string
		if incremental[name] {
			d.Incremental, d.DirtyBitmap, d.Granularity = true, "qemu:dirty-bitmap:b1", 64*kib
			extra = []string{"-B", "b1"}
		} else if since == "" {
			d.FullReason = "no reference point: the first backup of the VM"
		} else {
			d.FullReason = "the dirty bitmap was lost"
		}
		s := clitest.ServeNBD(v.t, d.Export, v.img(name), extra...)
		d.Socket = s.Sock
		servers = append(servers, s)
		ab.Disks = append(ab.Disks, d)
	}
	return ab, func() {
		for _, s := range servers {
			s.Stop()
		}
	}
}

func readRaw(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// restoreRaw rebuilds a disk of a backup straight from the repository.
func restoreRaw(t *testing.T, repo, id, disk string, size int64) []byte {
	t.Helper()
	r, err := backuprepo.Open(repo, backuprepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	buf := make(memWriter, size)
	if err := r.Restore(context.Background(), id, disk, buf, backuprepo.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	return buf
}

type memWriter []byte

func (m memWriter) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func decodeReport(t *testing.T, r result) backupcmd.Report {
	t.Helper()
	var rep backupcmd.Report
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil {
		t.Fatalf("backup create: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return rep
}

func diskOf(rep backupcmd.Report, name string) backupcmd.ReportDisk {
	for _, d := range rep.Disks {
		if d.Name == name {
			return d
		}
	}
	return backupcmd.ReportDisk{}
}

// The whole tool against real NBD servers: a full backup, an incremental that reads
// only the changed blocks of the tracked disk and all of the other, a restore into a
// new VM whose disks are byte for byte the VM's at the backup, verify, and prune.
func TestBackupCreateIncrementalRestoreVerifyPrune(t *testing.T) {
	v := newBackupVM(t)
	f := clitest.NewBackupHVD(t, v.vm)
	f.Dirs["web1"] = v.dir
	base := t.TempDir()
	repo := filepath.Join(base, "repo")
	f.Host.Root = base // same file system as the staging directory: register
	f.Host.Firmware.UEFIVars = "/nonexistent/OVMF_VARS.fd"

	// The disks before the first backup: data in blocks 0, 1 and 3 of root (1 MiB
	// blocks), block 1 of data1 and its last, short block.
	v.write("root", "write -P 0xaa 0 64k", "write -P 0xbb 1M 128k", "write -P 0xcc 3M 4k")
	v.write("data1", "write -P 0x11 1M 64k", "write -P 0x12 3M 512k")
	clitest.RunQEMU(t, "qemu-img", "bitmap", "--add", "--enable", "-g", "64K", "-f", "qcow2", v.img("root"), "b1")

	var stop func()
	f.Next = func(req api.BackupCreate) api.Operation {
		var ab api.Backup
		if req.Since == nil {
			ab, stop = v.open("hvb-1", "", nil)
		} else {
			ab, stop = v.open(fmt.Sprintf("hvb-%d", len(f.Finished)+1), *req.Since, map[string]bool{"root": true})
		}
		return api.Operation{Status: api.OpSuccess, Result: ab}
	}
	committed := map[string]int{}
	f.OnFinish = func(id string) error {
		ents, _ := os.ReadDir(filepath.Join(repo, "backups"))
		committed[id] = len(ents)
		return nil
	}

	// 1. Full, into a directory that does not exist yet.
	r := hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "--block-size", "1M", "-o", "json")
	stop()
	full := decodeReport(t, r)
	if !strings.Contains(r.stderr, "hv: created the backup repository "+repo) ||
		!strings.Contains(r.stderr, "disk root: full: no reference point: the first backup of the VM\n") ||
		!strings.Contains(r.stderr, "disk data1: full: no reference point") {
		t.Fatalf("stderr of the first backup:\n%s", r.stderr)
	}
	if full.Kind != "full" || full.Parent != "" || full.Reference != "hvb-1" || !full.Finished || full.Consistency != "application" ||
		full.VM != "web1" || full.VMID != "0b0e5f1c-0000-4000-8000-00000000e0b1" || full.Repository != repo {
		t.Fatalf("first backup %+v", full)
	}
	// Only the blocks that hold data are read: 3 of root, 2 of data1 (the last one short).
	if d := diskOf(full, "root"); d.ChangedBytes != 3*mib || !d.Full {
		t.Fatalf("root read %d bytes (%+v), want 3 MiB", d.ChangedBytes, d)
	}
	if d := diskOf(full, "data1"); d.ChangedBytes != mib+512*kib {
		t.Fatalf("data1 read %d bytes, want 1.5 MiB", d.ChangedBytes)
	}
	if full.StoredBytes != full.ChangedBytes {
		t.Fatalf("stored %d of %d bytes read", full.StoredBytes, full.ChangedBytes)
	}
	if f.Body("POST /1.0/vms/web1/backups") != `{"consistency":"application","since":null}` {
		t.Fatalf("first request %s", f.Body("POST /1.0/vms/web1/backups"))
	}
	if committed["hvb-1"] != 1 || !slices.Equal(f.Finished, []string{"hvb-1"}) || len(f.Aborted) != 0 {
		t.Fatalf("finish: committed %v, finished %v, aborted %v", committed, f.Finished, f.Aborted)
	}
	rootAt1, dataAt1 := v.snapshot("root"), v.snapshot("data1")

	// 2. The guest writes: 4 KiB in block 2, zeros over block 0; and data1 changes
	// (its bitmap is lost: hvd reads it whole).
	v.write("root", "write -P 0xdd 2M 4k", "write -z 0 1M")
	v.write("data1", "write -P 0x13 0 4k")
	rootAt2, dataAt2 := v.snapshot("root"), v.snapshot("data1")
	r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "--freeze-timeout", "20", "-o", "json")
	stop()
	inc := decodeReport(t, r)
	if strings.Contains(r.stderr, "created") || strings.Contains(r.stderr, "disk root: full") ||
		!strings.Contains(r.stderr, "disk data1: full: the dirty bitmap was lost\n") {
		t.Fatalf("stderr of the incremental:\n%s", r.stderr)
	}
	if want := `{"consistency":"application","since":"hvb-1","freeze_timeout":20}`; f.Body("POST /1.0/vms/web1/backups") != want {
		t.Fatalf("second request %s, want %s", f.Body("POST /1.0/vms/web1/backups"), want)
	}
	if inc.Kind != "incremental" || inc.Parent != full.ID || inc.Reference != "hvb-2" || !inc.Finished {
		t.Fatalf("incremental %+v", inc)
	}
	// Block 0 (now zeros) and block 2 changed; only block 2 is read. data1 whole.
	if d := diskOf(inc, "root"); d.ChangedBytes != 2*mib || d.Full {
		t.Fatalf("incremental root: %+v, want 2 MiB changed", d)
	}
	if d := diskOf(inc, "data1"); !d.Full || d.FullReason != "the dirty bitmap was lost" || d.ChangedBytes != 2*mib+512*kib {
		t.Fatalf("incremental data1: %+v", d)
	}
	if inc.StoredBytes != mib+mib { // root's block 2, data1's block 0; the rest is in the store
		t.Fatalf("incremental stored %d bytes, want 2 MiB", inc.StoredBytes)
	}
	if committed["hvb-2"] != 2 {
		t.Fatalf("hvb-2 finished before its commit: %v", committed)
	}
	for name, want := range map[string]string{"root": rootAt2, "data1": dataAt2} {
		if got := restoreRaw(t, repo, inc.ID, name, v.sizes[name]); !bytes.Equal(got, readRaw(t, want)) {
			t.Fatalf("incremental: disk %s restored differs from the disk at the backup", name)
		}
	}
	for name, want := range map[string]string{"root": rootAt1, "data1": dataAt1} {
		if got := restoreRaw(t, repo, full.ID, name, v.sizes[name]); !bytes.Equal(got, readRaw(t, want)) {
			t.Fatalf("full: disk %s restored differs from the disk at the backup", name)
		}
	}

	// 3. Restore the incremental as a new VM: the directory hvd imports.
	f.OnImport = func(req api.VMImport) error {
		if req.Name != "web2" || !req.NewID || req.Mode != api.ImportRegister || !strings.HasPrefix(req.Dir, base+"/.hv-restore-web2-") {
			return fmt.Errorf("import request %+v", req)
		}
		cfg, _, err := vmconfig.Load(req.Dir)
		if err != nil {
			return err
		}
		if cfg.Name != "web2" || cfg.NVRAM != "nvram.fd" || len(cfg.Disks) != 2 || cfg.Disks[0] != (vmconfig.Disk{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}) ||
			cfg.Disks[1].Bus != "hp1" || cfg.NICs[0].Bus != "hp0" || cfg.KVP["role"] != "web" {
			return fmt.Errorf("restored configuration %+v", cfg)
		}
		ents, _ := os.ReadDir(req.Dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "config.json data1.qcow2 nvram.fd root.qcow2" {
			return fmt.Errorf("restored files %v", names)
		}
		if !bytes.Equal(readRaw(t, filepath.Join(req.Dir, "nvram.fd")), v.nvram) {
			return fmt.Errorf("nvram.fd differs")
		}
		for name, want := range map[string]string{"root": rootAt2, "data1": dataAt2} {
			img := filepath.Join(req.Dir, name+".qcow2")
			if info := clitest.RunQEMU(t, "qemu-img", "info", "--output=json", img); !strings.Contains(info, `"format": "qcow2"`) {
				return fmt.Errorf("%s: %s", img, info)
			}
			clitest.RunQEMU(t, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", img, want)
		}
		return nil
	}
	r = hv(t, f.FakeHVD, "", "backup", "restore", "--repo", repo, inc.ID, "--as", "web2")
	if r.code != 0 || r.stdout != "Restored backup "+inc.ID+" as VM web2; it is Off: start it with: hv vm start web2\n" {
		t.Fatalf("restore: code %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(base, ".hv-restore-*")); len(left) != 0 {
		t.Fatalf("the restore left %v", left)
	}
	r = hv(t, f.FakeHVD, "", "backup", "restore", "--repo", repo, inc.ID, "--as", "web2")
	if r.code != 1 || !strings.Contains(r.stderr, "--as: VM web2 exists already") || len(f.Imports) != 1 {
		t.Fatalf("restore over an existing name: %d %q", r.code, r.stderr)
	}
	// hvd's store on another file system: hvd copies the files. And one whose
	// register fails for that reason: hv copies instead.
	f.OnImport = func(req api.VMImport) error {
		if req.Mode != api.ImportCopy {
			return fmt.Errorf("mode: %s is on another file system than hv's store; import with copy instead", req.Dir)
		}
		if _, _, err := vmconfig.Load(req.Dir); err != nil {
			return err
		}
		return nil
	}
	f.Host.Root = "/nonexistent"
	r = hv(t, f.FakeHVD, "", "backup", "restore", "--repo", repo, full.ID, "--as", "web3", "-o", "json")
	var vm api.VM
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &vm) != nil || vm.Name != "web3" || f.Imports[1].Mode != api.ImportCopy {
		t.Fatalf("restore by copy: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	f.Host.Root = base
	r = hv(t, f.FakeHVD, "", "backup", "restore", "--repo", repo, full.ID, "--as", "web4")
	if r.code != 0 || len(f.Imports) != 4 || f.Imports[2].Mode != api.ImportRegister || f.Imports[3].Mode != api.ImportCopy ||
		!strings.Contains(r.stderr, "hvd could not take the restored files over") {
		t.Fatalf("register, then copy: %d\n%s\n%s\n%+v", r.code, r.stdout, r.stderr, f.Imports)
	}
	if left, _ := filepath.Glob(filepath.Join(base, ".hv-restore-*")); len(left) != 0 {
		t.Fatalf("the restores left %v", left)
	}

	// 4. A third backup with nothing changed (hvd started a new bitmap at the
	// finish), then list, verify and prune.
	clitest.RunQEMU(t, "qemu-img", "bitmap", "--clear", "-f", "qcow2", v.img("root"), "b1")
	r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "-o", "json")
	stop()
	third := decodeReport(t, r)
	if third.Kind != "incremental" || third.Parent != inc.ID || diskOf(third, "root").ChangedBytes != 0 || third.StoredBytes != 0 {
		t.Fatalf("third backup %+v", third)
	}
	r = hv(t, f.FakeHVD, "", "backup", "list", "--repo", repo)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[2], inc.ID+"  web1  incremental  "+full.ID+"  application") {
		t.Fatalf("list:\n%s\n%s", r.stdout, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "verify", "--repo", repo)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Verified 3 backups in "+repo+": ") || !strings.HasSuffix(r.stdout, "; no problems\n") {
		t.Fatalf("verify: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "prune", "--repo", repo, "--keep-last", "1", "--dry-run", "-o", "json")
	var pr backuprepo.PruneResult
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pr) != nil || len(pr.Removed) != 2 || pr.FreedBytes == 0 {
		t.Fatalf("prune --dry-run: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if ents, _ := os.ReadDir(filepath.Join(repo, "backups")); len(ents) != 3 {
		t.Fatalf("a dry run removed backups: %d left", len(ents))
	}
	r = hv(t, f.FakeHVD, "", "backup", "prune", "--repo", repo, "--keep-last", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "Removed:  2 ("+full.ID+", "+inc.ID+")") || !strings.Contains(r.stdout, "Rebased:  "+third.ID) {
		t.Fatalf("prune: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for name, want := range map[string]string{"root": rootAt2, "data1": dataAt2} {
		if got := restoreRaw(t, repo, third.ID, name, v.sizes[name]); !bytes.Equal(got, readRaw(t, want)) {
			t.Fatalf("after prune: disk %s of the kept backup differs", name)
		}
	}

	// 5. A damaged block: verify says so and exits 1; --repair forgets it.
	damageFirstPackedBlock(t, repo)
	r = hv(t, f.FakeHVD, "", "backup", "verify", "--repo", repo, third.ID)
	if r.code != 1 || !strings.Contains(r.stdout, "1 problem:\n  "+third.ID+": block ") ||
		!strings.Contains(r.stderr, "Error: verify found 1 problem in "+repo) {
		t.Fatalf("verify of a damaged block: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "verify", "--repo", repo, "--repair")
	if r.code != 1 || !strings.Contains(r.stdout, "Forgot 1 damaged block: the next backup that reads the same data stores it again") {
		t.Fatalf("verify --repair: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "verify", "--repo", repo)
	if r.code != 1 || !strings.Contains(r.stdout, "is missing") {
		t.Fatalf("verify after the repair: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// damageFirstPackedBlock flips a byte of the first block that the first pack
// index of the repository names, as docs/backup-repository.md lays it out.
func damageFirstPackedBlock(t *testing.T, repo string) {
	t.Helper()
	idxs, _ := filepath.Glob(filepath.Join(repo, "packs", "*.idx"))
	if len(idxs) == 0 {
		t.Fatal("no pack index in the repository")
	}
	idx := readRaw(t, idxs[0])
	if len(idx) < 16+44+32 || string(idx[:8]) != "HVPIDX1\n" {
		t.Fatalf("%s is not a pack index", idxs[0])
	}
	off := int64(binary.BigEndian.Uint64(idx[16+32:]))
	pack := strings.TrimSuffix(idxs[0], ".idx") + ".pack"
	f, err := os.OpenFile(pack, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("bit rot"), off); err != nil {
		t.Fatal(err)
	}
}

// Any failure after hvd opened the backup aborts it there and leaves the repository
// without a trace; FinishBackup is never called.
func TestBackupCreateAbortsOnFailure(t *testing.T) {
	v := newBackupVM(t)
	f := clitest.NewBackupHVD(t, v.vm)
	f.Dirs["web1"] = v.dir
	repo := filepath.Join(t.TempDir(), "repo")
	f.Next = func(req api.BackupCreate) api.Operation {
		ab, stop := v.open("hvb-1", "", nil)
		stop()                                    // the view is gone: reading it fails
		ab.Disks[1].Socket = v.dir + "/none.sock" // and this one was never there
		return api.Operation{Status: api.OpSuccess, Result: ab}
	}
	r := hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo)
	if r.code != 1 || !strings.Contains(r.stderr, "Error: backup of VM web1 failed and was aborted (the repository and hvd's reference points are as they were): disk root: hvd's NBD export \"hv-root\"") {
		t.Fatalf("code %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if !slices.Equal(f.Aborted, []string{"hvb-1"}) || len(f.Finished) != 0 {
		t.Fatalf("aborted %v, finished %v", f.Aborted, f.Finished)
	}
	for _, d := range []string{"backups", "staging"} {
		if ents, err := os.ReadDir(filepath.Join(repo, d)); err != nil || len(ents) != 0 {
			t.Fatalf("%s/ holds %v (%v)", d, ents, err)
		}
	}

	// hvd that cannot open a backup: nothing to abort, the message is hvd's.
	f.Next = func(api.BackupCreate) api.Operation {
		return api.Operation{Status: api.OpFailure, ErrorCode: 409, Error: "cannot back up VM web1: it is Saving; wait for it"}
	}
	r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo)
	if r.code != 1 || !strings.HasSuffix(r.stderr, "\nError: cannot back up VM web1: it is Saving; wait for it\n") || len(f.Aborted) != 1 {
		t.Fatalf("failed open: %d %q", r.code, r.stderr)
	}
	f.Next = nil // hvd without backups yet
	if r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo); r.code != 1 || r.stderr != "Error: backups are being built\n" {
		t.Fatalf("503: %d %q", r.code, r.stderr)
	}
}

// Ctrl-C while the disks are read aborts the backup on both sides and exits 130.
func TestBackupCreateInterrupted(t *testing.T) {
	v := newBackupVM(t)
	f := clitest.NewBackupHVD(t, v.vm)
	f.Dirs["web1"] = v.dir
	repo := filepath.Join(t.TempDir(), "repo")
	v.write("root", "write -P 0xaa 0 64k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Next = func(req api.BackupCreate) api.Operation {
		ab, stop := v.open("hvb-1", "", nil)
		t.Cleanup(stop)
		return api.Operation{Status: api.OpSuccess, Result: ab}
	}
	// The interrupt comes once the repository's writer holds the backup.
	f.OnIntegration = cancel
	r := hvCtx(ctx, f.FakeHVD, "backup", "create", "web1", "--repo", repo)
	if r.code != cli.ExitInterrupted || !strings.Contains(r.stderr, "interrupted and aborted") || !slices.Equal(f.Aborted, []string{"hvb-1"}) {
		t.Fatalf("code %d, stderr %q, aborted %v, finished %v", r.code, r.stderr, f.Aborted, f.Finished)
	}
	if ents, _ := os.ReadDir(filepath.Join(repo, "backups")); len(ents) != 0 {
		t.Fatalf("an interrupted backup is in the repository: %v", ents)
	}
}

// A backup stored but not finished in hvd (hvd failed at the last step) is kept; the
// next backup builds on the reference point hvd still tracks, an older one.
func TestBackupFinishFailsThenBuildsOnOlderReference(t *testing.T) {
	v := newBackupVM(t)
	f := clitest.NewBackupHVD(t, v.vm)
	f.Dirs["web1"] = v.dir
	repo := filepath.Join(t.TempDir(), "repo")
	clitest.RunQEMU(t, "qemu-img", "bitmap", "--add", "--enable", "-g", "64K", "-f", "qcow2", v.img("root"), "b1")
	n := 0
	f.Next = func(req api.BackupCreate) api.Operation {
		n++
		inc := map[string]bool{}
		since := ""
		if req.Since != nil {
			since, inc["root"] = *req.Since, true
		}
		ab, stop := v.open(fmt.Sprintf("hvb-%d", n), since, inc)
		t.Cleanup(stop)
		return api.Operation{Status: api.OpSuccess, Result: ab}
	}
	first := decodeReport(t, hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "-o", "json"))
	f.OnFinish = func(string) error { return fmt.Errorf("hvd lost its disk") }
	r := hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "-o", "json")
	second := decodeReport(t, r)
	if second.Finished || !strings.Contains(r.stderr, "hv: backup "+second.ID+" is stored in "+repo+", but hvd did not make hvb-2 a reference point: hvd lost its disk") ||
		!slices.Equal(f.Aborted, []string{"hvb-2"}) {
		t.Fatalf("second: %+v\n%s\naborted %v", second, r.stderr, f.Aborted)
	}
	f.OnFinish = nil
	r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "-o", "json")
	third := decodeReport(t, r)
	if third.Parent != first.ID || third.Kind != "incremental" || !strings.Contains(r.stderr, "building on backup "+first.ID+": hvd tracks no changes since the newer "+second.ID) ||
		!strings.Contains(f.Body("POST /1.0/vms/web1/backups"), `"since":"hvb-1"`) {
		t.Fatalf("third: %+v\n%s\n%s", third, r.stderr, f.Body("POST /1.0/vms/web1/backups"))
	}
	// --full asks for no reference point at all.
	r = hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", repo, "--full", "--consistency", "crash", "-o", "json")
	if rep := decodeReport(t, r); rep.Kind != "full" || f.Body("POST /1.0/vms/web1/backups") != `{"consistency":"crash","since":null}` {
		t.Fatalf("--full: %+v %s", rep, f.Body("POST /1.0/vms/web1/backups"))
	}
}

func TestBackupUsageErrors(t *testing.T) {
	f := clitest.NewBackupHVD(t, testVMs()...)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "create", "web1"}, "--repo: give the backup repository's directory"},
		{[]string{"backup", "create", "--repo", "/r"}, "takes one VM name"},
		{[]string{"backup", "create", "web1", "--repo", "/r", "--consistency", "fs"}, `--consistency "fs": use application`},
		{[]string{"backup", "create", "web1", "--repo", "/r", "--block-size", "100K"}, `--block-size: 100K is not a power of two from 64K to 64M`},
		{[]string{"backup", "create", "web1", "--repo", "/r", "--block-size", "4K"}, `--block-size: 4K is not a power of two`},
		{[]string{"backup", "create", "web1", "--repo", "/r", "--async"}, "--async: hv backup create moves the data itself"},
		{[]string{"backup", "create", "web1", "--repo", "/r", "--freeze-timeout", "0"}, "give at least 1 second"},
		{[]string{"backup", "list"}, "needs --repo DIR"},
		{[]string{"backup", "verify", "x"}, "--repo: give"},
		{[]string{"backup", "restore", "--repo", "/r", "x"}, "--as: give the name"},
		{[]string{"backup", "restore", "--repo", "/r", "x", "--as", "bad name"}, "--as"},
		{[]string{"backup", "restore", "--repo", "/r", "x", "--in-place"}, "--in-place: restoring over an existing VM is not supported yet; restore beside it with --as NEWNAME"},
		{[]string{"backup", "prune", "--repo", "/r"}, "--keep-last, --keep-daily: give at least one"},
		{[]string{"backup", "prune", "--repo", "/r", "--keep-last", "-1"}, "counts of 0 or more"},
		{[]string{"backup", "abort", "web1"}, "takes a VM name and the id of its open backup"},
	} {
		r := hv(t, f.FakeHVD, "", c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("%v: code %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if f.Saw("POST") || f.Saw("DELETE") {
		t.Fatalf("a bad command line reached hvd: %q", f.Requests)
	}

	// A directory that is not a repository, for each command.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "photo.jpg"), nil, 0o600)
	for _, args := range [][]string{{"list", "--repo", dir}, {"verify", "--repo", dir}, {"prune", "--repo", dir, "--keep-last", "1"},
		{"restore", "--repo", dir, "20260302T080000Z-f1d0e8", "--as", "x"}} {
		r := hv(t, f.FakeHVD, "", append([]string{"backup"}, args...)...)
		if want := "Error: --repo: " + dir + " is not a backup repository; create one with: hv backup create VM --repo " + dir + "\n"; r.code != 1 || r.stderr != want {
			t.Errorf("%v: %d %q, want %q", args, r.code, r.stderr, want)
		}
	}
	r := hv(t, f.FakeHVD, "", "backup", "create", "web1", "--repo", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "--repo: "+dir+" is neither a backup repository nor empty (it holds \"photo.jpg\")") {
		t.Fatalf("create into a foreign directory: %d %q", r.code, r.stderr)
	}
	empty := t.TempDir()
	if r := hv(t, f.FakeHVD, "", "backup", "list", "--repo", empty); r.code != 1 || !strings.Contains(r.stderr, "is not a backup repository") {
		t.Fatalf("list of an empty directory: %d %q", r.code, r.stderr)
	}
	if _, err := backuprepo.Init(filepath.Join(empty, "r"), backuprepo.Options{}); err != nil {
		t.Fatal(err)
	}
	r = hv(t, f.FakeHVD, "", "backup", "list", "--repo", filepath.Join(empty, "r"), "web1")
	if r.code != 0 || r.stdout != "The repository "+filepath.Join(empty, "r")+" holds no backups of VM web1; take one with: hv backup create web1 --repo "+filepath.Join(empty, "r")+"\n" {
		t.Fatalf("empty list: %d %q", r.code, r.stdout)
	}
	r = hv(t, f.FakeHVD, "", "backup", "restore", "--repo", filepath.Join(empty, "r"), "20260302T080000Z-f1d0e8", "--as", "x")
	if r.code != 1 || !strings.Contains(r.stderr, "backup 20260302T080000Z-f1d0e8 is not in the repository") {
		t.Fatalf("restore of a missing backup: %d %q", r.code, r.stderr)
	}
}

func TestBackupListTrackingAndAbort(t *testing.T) {
	f := clitest.NewBackupHVD(t, testVMs()...)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.Local)
	f.Refs = []api.ReferencePoint{{ID: "hvb-1", Time: at, Consistency: "application", Disks: []string{"root", "data1"}}}
	f.Open["hvb-2"] = api.Backup{ID: "hvb-2", VM: "web1", Time: at.Add(time.Hour), Since: "hvb-1", ExpiresAt: at.Add(25 * time.Hour)}
	r := hv(t, f.FakeHVD, "", "backup", "list", "web1")
	want := "" +
		"REFERENCE POINT  TAKEN                CONSISTENCY  DISKS\n" +
		"hvb-1            2025-06-01 12:00:00  application  root,data1\n" +
		"\n" +
		"DISK   TRACKED  WHY NOT\n" +
		"root   yes      -\n" +
		"data1  no       the dirty bitmap was lost\n" +
		"\n" +
		"OPEN BACKUP  TAKEN                SINCE  EXPIRES\n" +
		"hvb-2        2025-06-01 13:00:00  hvb-1  2025-06-02 13:00:00\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("code %d\n%s\nwant\n%s\n%s", r.code, r.stdout, want, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "list", "web1", "-o", "json")
	var tv backupcmd.TrackingView
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tv) != nil || len(tv.Open) != 1 || tv.ReferencePoints[0].ID != "hvb-1" {
		t.Fatalf("json: %s", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "abort", "web1", "h"); !strings.HasPrefix(r.stdout, "hvb-2\topened 2025-06-01 13:00:00\n") {
		t.Fatalf("abort completion %q", r.stdout)
	}
	r = hv(t, f.FakeHVD, "", "backup", "abort", "web1", "hvb-2")
	if r.code != 0 || r.stdout != "Aborted backup hvb-2 of VM web1; the reference point it started from stays valid\n" || !slices.Equal(f.Aborted, []string{"hvb-2"}) {
		t.Fatalf("abort: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "abort", "web1", "hvb-2")
	if r.code != 1 || r.stderr != "Error: backup hvb-2 of VM web1 is not open\n" {
		t.Fatalf("abort again: %d %q", r.code, r.stderr)
	}
	r = hv(t, f.FakeHVD, "", "backup", "list", "web1")
	if !strings.HasPrefix(r.stdout, "REFERENCE POINT") || strings.Contains(r.stdout, "OPEN BACKUP") {
		t.Fatalf("list after abort:\n%s", r.stdout)
	}
	f.Refs = nil
	if r := hv(t, f.FakeHVD, "", "backup", "list", "db"); !strings.HasPrefix(r.stdout, "VM db has no reference point: its next backup is full\n") {
		t.Fatalf("no reference point: %q", r.stdout)
	}
}

func TestBackupCompletion(t *testing.T) {
	f := clitest.NewBackupHVD(t, testVMs()...)
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "create", "w"); !strings.HasPrefix(r.stdout, "web1\tRunning\n:4\n") {
		t.Fatalf("create completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "create", "web1", "--consistency", ""); !strings.HasPrefix(r.stdout, "application\ncrash\n:4\n") {
		t.Fatalf("--consistency completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "create", "web1", "--repo", ""); !strings.HasPrefix(r.stdout, ":16\n") {
		t.Fatalf("--repo completion %q", r.stdout)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	rp, err := backuprepo.Init(repo, backuprepo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := rp.Begin(backuprepo.BackupMeta{VM: "web1", Kind: backuprepo.Full, Consistency: backuprepo.Crash,
		Time: time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC), Disks: []backuprepo.DiskMeta{{Name: "root", Size: 4096}}})
	if err != nil {
		t.Fatal(err)
	}
	w.SetConfig([]byte("{}"))
	b, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "verify", "--repo", repo, ""); !strings.HasPrefix(r.stdout, b.ID+"\tweb1 full ") {
		t.Fatalf("verify completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "restore", "--repo", repo, "2026"); !strings.HasPrefix(r.stdout, b.ID+"\t") {
		t.Fatalf("restore completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "prune", "--repo", repo, "--keep-last", "1", ""); !strings.HasPrefix(r.stdout, "web1\t1 backup\n") {
		t.Fatalf("prune completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", "list", "--repo", repo, ""); !strings.HasPrefix(r.stdout, "web1\t1 backup\n") {
		t.Fatalf("list completion %q", r.stdout)
	}
	if r := hv(t, f.FakeHVD, "", "__complete", "backup", ""); !strings.Contains(r.stdout, "create\t") || !strings.Contains(r.stdout, "restore\t") {
		t.Fatalf("subcommands %q", r.stdout)
	}
}

// hvCtx runs hv like hv() with a context the test controls (Ctrl-C).
func hvCtx(ctx context.Context, f *clitest.FakeHVD, args ...string) result {
	var out, errb bytes.Buffer
	env := func(k string) string {
		if k == "HV_SOCKET" {
			return f.Socket
		}
		return ""
	}
	a := &cli.App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: env, ConsoleGrace: 300 * time.Millisecond}
	code := execute(ctx, a, args)
	return result{code, out.String(), errb.String()}
}
