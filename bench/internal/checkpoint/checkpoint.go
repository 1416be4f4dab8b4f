// Package checkpoint is the checkpoint benchmark: `hv checkpoint create/apply`
// against libvirt's snapshots and the same steps by hand on plain QEMU (see
// bench/README.md).
package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/libvirt"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Checkpoint benchmark settings. One guest for every side: generation 2 (q35, OVMF)
// booting tiny-uefi.qcow2 (its ext4 root can be frozen), 1.5 GiB, 1 vCPU, with 1 GiB
// of random data written into /dev/shm so that a memory checkpoint has 1 GiB of dirty
// RAM to save.
const (
	ckRuns      = 5 // per create series, no warm-up: each run adds a checkpoint
	ckApplyRuns = 3 // per apply series
	ckMemMiB    = 1536
	ckCPUs      = 1
	ckFillMiB   = 1024
	ckFillLimit = 5 * time.Minute
	ckOpLimit   = 5 * time.Minute // one checkpoint create or apply
	ckDiskBytes = 1 << 30         // written by the disk bandwidth measurement
	ckImage     = "tiny-uefi.qcow2"
)

// ckFillScript fills the guest's RAM: tmpfs /dev/shm is half the RAM by default, so it
// is grown first; busybox dd writes 1 GiB from /dev/urandom (incompressible, no zero
// pages); the size is checked.
var ckFillScript = fmt.Sprintf("mount -o remount,size=%dm /dev/shm && "+
	"dd if=/dev/urandom of=/dev/shm/fill bs=1M count=%d 2>/dev/null && "+
	"test \"$(wc -c < /dev/shm/fill)\" -eq %d", ckFillMiB+64, ckFillMiB, ckFillMiB<<20)

// ckFilledScript checks, after a standard checkpoint was applied, that the guest's RAM
// came back: the file in /dev/shm (tmpfs) is there only if it did.
var ckFilledScript = fmt.Sprintf("test \"$(stat -c %%s /dev/shm/fill)\" -eq %d", ckFillMiB<<20)

// ckSide is what one side (hv, libvirt, plain QEMU) measured.
type ckSide struct {
	err     error  // why it was not measured, or why it stopped early
	applyNA string // why apply was not measured (libvirt)
	load    string // host load average when the side started
	boot    time.Duration
	fill    time.Duration
	// production: until the command returned; frozen: how long the guest's file
	// systems were frozen (hv: the checkpoint's frozen_seconds).
	prod, frozen []time.Duration
	// standard: until done; stdRunning: until the guest ran again (plain only: its
	// memory file is synced after cont); stdBytes: size of what was saved.
	std, stdRunning []time.Duration
	stdBytes        []int64
	// apply standard: until Running; apply production: until Off, then start until
	// the heartbeat (hv only).
	applyStd, applyProdOff, applyProdHB []time.Duration
}

func (s *ckSide) measured() bool {
	return len(s.prod)+len(s.std)+len(s.applyStd)+len(s.applyProdOff) > 0
}

// diskBW is one measurement of the host disk under the benchmark's files, MiB/s.
type diskBW struct{ synced, direct float64 }

type ckResult struct {
	hv, lv, plain ckSide
	disk          []diskBW
	fs            string // the file system the files live on
	libvirt       string // libvirt and QEMU versions seen by virsh
	load          [2]string
}

// Run measures checkpoint create and apply of hv against libvirt's
// snapshot-create-as and against the same steps done by hand on plain QEMU (QMP +
// guest agent), one VM at a time: hv, libvirt, plain. The disk's write bandwidth is
// measured before and after, in the same directory.
func Run(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	work, err := os.MkdirTemp("/tmp", "hvbck")
	if err != nil {
		return "", err
	}
	cl.Add(func() { os.RemoveAll(work) })
	r := &ckResult{load: [2]string{results.LoadAvg()}, fs: results.FSOf(work)}
	image := filepath.Join(e.Guest, ckImage)

	bw, err := measureDisk(filepath.Join(work, "disk-test"))
	if err != nil {
		return "", fmt.Errorf("disk bandwidth: %w", err)
	}
	harness.Logf("disk under %s: %.0f MiB/s buffered + fdatasync, %s O_DIRECT", work, bw.synced, stats.MiBs(bw.direct))
	r.disk = append(r.disk, bw)

	load := results.LoadAvg()
	harness.Logf("-- hv (load average %s)", load)
	r.hv = ckHV(ctx, e, image)
	r.hv.load, load = load, results.LoadAvg()
	harness.Logf("-- libvirt (load average %s)", load)
	r.lv = ckLibvirt(ctx, e, filepath.Join(work, "libvirt"), image, &r.libvirt)
	r.lv.load, load = load, results.LoadAvg()
	harness.Logf("-- plain QEMU (load average %s)", load)
	r.plain = ckPlain(ctx, e, filepath.Join(work, "plain"), image)
	r.plain.load = load
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	if bw, err = measureDisk(filepath.Join(work, "disk-test")); err != nil {
		return "", fmt.Errorf("disk bandwidth: %w", err)
	}
	harness.Logf("disk under %s: %.0f MiB/s buffered + fdatasync, %s O_DIRECT", work, bw.synced, stats.MiBs(bw.direct))
	r.disk = append(r.disk, bw)
	r.load[1] = results.LoadAvg()

	if !r.hv.measured() && !r.lv.measured() && !r.plain.measured() {
		return "", fmt.Errorf("nothing measured: hv: %v; libvirt: %v; plain: %v", r.hv.err, r.lv.err, r.plain.err)
	}
	return ckSection(e, r), nil
}

// sideFail records why a side stopped and logs it.
func sideFail(s *ckSide, side, step string, err error) {
	s.err = fmt.Errorf("%s: %w", step, err)
	harness.Logf("%s: %v", side, s.err)
}

// hv side: hvd through its CLI (hv checkpoint create/apply), as a user would.

func ckHV(ctx context.Context, e *harness.Env, image string) (s ckSide) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()
	fail := func(step string, err error) ckSide { sideFail(&s, "hv", step, err); return s }

	hvBin := filepath.Join(e.Bin, "hv")
	if _, err := os.Stat(hvBin); err != nil {
		return fail("hv CLI", fmt.Errorf("missing in %s; run make build", e.Bin))
	}
	h, err := hvside.StartHVD(ctx, e, cl, "")
	if err != nil {
		return fail("hvd", err)
	}
	const name = "ckpt"
	bt, poll, err := h.CreateAndBoot(ctx, e, api.VMCreate{Name: name, Generation: 2, CPUs: ckCPUs,
		Memory: fmt.Sprintf("%dM", ckMemMiB), Image: image})
	if err != nil {
		return fail("boot", err)
	}
	s.boot = bt.Heartbeat
	t0 := time.Now()
	if _, err := hvside.ExecLimit(ctx, h.Client, name, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	}
	s.fill = time.Since(t0)
	harness.Logf("hv: 1 GiB written into the guest's /dev/shm in %s", stats.Ms(s.fill))

	cli := func(args ...string) ([]byte, time.Duration, error) {
		cmd := exec.CommandContext(ctx, hvBin, append([]string{"--socket", h.Client.Socket(), "-q"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			return nil, d, fmt.Errorf("hv %s: %w: %s", strings.Join(args, " "), err,
				strings.TrimSpace(stderr.String()+" "+stdout.String()))
		}
		return stdout.Bytes(), d, nil
	}
	create := func(cp, typ string) (api.Checkpoint, time.Duration, error) {
		out, d, err := cli("-o", "json", "checkpoint", "create", name, cp, "--type", typ)
		if err != nil {
			return api.Checkpoint{}, d, err
		}
		c, err := hvCheckpoint(out, cp, func() ([]byte, error) {
			out, _, err := cli("-o", "json", "checkpoint", "list", name)
			return out, err
		})
		return c, d, err
	}

	for i := 1; i <= ckRuns; i++ {
		harness.Settle()
		c, d, err := create(fmt.Sprintf("prod%d", i), api.CheckpointProduction)
		if err != nil {
			return fail("production checkpoint", err)
		}
		if c.FellBack {
			return fail("production checkpoint", fmt.Errorf("fell back to a standard checkpoint: %s", c.FallbackReason))
		}
		frozen := time.Duration(c.FrozenSeconds * float64(time.Second))
		s.prod, s.frozen = append(s.prod, d), append(s.frozen, frozen)
		harness.Logf("hv production %d/%d: %s, frozen %s", i, ckRuns, stats.Ms(d), stats.Ms(frozen))
	}
	lastStd := ""
	for i := 1; i <= ckRuns; i++ {
		lastStd = fmt.Sprintf("std%d", i)
		harness.Settle()
		c, d, err := create(lastStd, api.CheckpointStandard)
		if err != nil {
			return fail("standard checkpoint", err)
		}
		if !c.HasMemory {
			return fail("standard checkpoint", fmt.Errorf("%s holds no memory (has_memory false)", c.Name))
		}
		s.std, s.stdBytes = append(s.std, d), append(s.stdBytes, int64(c.SizeBytes))
		harness.Logf("hv standard %d/%d: %s, %s, %s", i, ckRuns, stats.Ms(d), stats.MiB(c.SizeBytes), stats.MiBs(stats.Throughput(int64(c.SizeBytes), d)))
	}

	for i := 1; i <= ckApplyRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		if _, _, err := cli("checkpoint", "apply", name, lastStd); err != nil {
			return fail("apply standard", err)
		}
		if err := h.WaitState(ctx, name, api.StateRunning, ckOpLimit); err != nil {
			return fail("apply standard", err)
		}
		d := time.Since(t0)
		s.applyStd = append(s.applyStd, d)
		harness.Logf("hv apply standard %d/%d: Running after %s", i, ckApplyRuns, stats.Ms(d))
		if _, err := hvside.ExecLimit(ctx, h.Client, name, time.Minute, "/bin/sh", "-c", ckFilledScript); err != nil {
			return fail("apply standard", fmt.Errorf("the guest's RAM did not come back: %w", err))
		}
	}
	for i := 1; i <= ckApplyRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		if _, _, err := cli("checkpoint", "apply", name, "prod1"); err != nil {
			return fail("apply production", err)
		}
		if err := h.WaitState(ctx, name, api.StateOff, ckOpLimit); err != nil {
			return fail("apply production", err)
		}
		d := time.Since(t0)
		bt, _, err := h.StartAndWaitHeartbeat(ctx, name, poll, guest.AgentLimit)
		if err != nil {
			return fail("start after apply production", err)
		}
		s.applyProdOff, s.applyProdHB = append(s.applyProdOff, d), append(s.applyProdHB, bt.Heartbeat)
		harness.Logf("hv apply production %d/%d: Off after %s, start to heartbeat %s", i, ckApplyRuns, stats.Ms(d), stats.Ms(bt.Heartbeat))
	}
	return s
}

// hvCheckpoint decodes the checkpoint `hv checkpoint create -o json` printed; when
// that is not one (an older CLI printing something else), it looks name up in
// `hv checkpoint list -o json`.
func hvCheckpoint(out []byte, name string, list func() ([]byte, error)) (api.Checkpoint, error) {
	var c api.Checkpoint
	if err := json.Unmarshal(out, &c); err == nil && c.Name == name {
		return c, nil
	}
	out, err := list()
	if err != nil {
		return c, err
	}
	var all []api.Checkpoint
	if err := json.Unmarshal(out, &all); err != nil {
		return c, fmt.Errorf("hv checkpoint list -o json: %w: %.200q", err, out)
	}
	for _, c := range all {
		if c.Name == name {
			return c, nil
		}
	}
	return c, fmt.Errorf("checkpoint %s is not in hv checkpoint list", name)
}

// libvirt side: a private libvirtd (package libvirt) and virsh snapshot-create-as.

func ckLibvirt(ctx context.Context, e *harness.Env, dir, image string, version *string) (s ckSide) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()
	fail := func(step string, err error) ckSide { sideFail(&s, "libvirt", step, err); return s }

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("setup", err)
	}
	l, err := libvirt.Start(ctx, cl, dir)
	if err != nil {
		return fail("libvirtd", err)
	}
	*version = l.Version
	d := libvirt.Domain{Name: "hvbench-ckpt", Disk: filepath.Join(dir, "disk.qcow2"), Vars: filepath.Join(dir, "vars.fd"),
		Serial: filepath.Join(dir, "serial.log"), MemMiB: ckMemMiB, CPUs: ckCPUs, Accel: e.Host.Accel}
	if err := harness.CopyFile(image, d.Disk); err != nil {
		return fail("disk copy", err)
	}
	if err := harness.CopyFile(guest.OVMFVars, d.Vars); err != nil {
		return fail("OVMF VARS copy", err)
	}
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(d.XML()), 0o644); err != nil {
		return fail("domain XML", err)
	}
	t0 := time.Now()
	if _, err := l.Virsh(ctx, time.Minute, "create", xmlPath); err != nil {
		return fail("virsh create", err)
	}
	if _, err := l.WaitAgent(ctx, d.Name, guest.AgentLimit); err != nil {
		return fail("boot", fmt.Errorf("%w; %s", err, harness.Tail(d.Serial)))
	}
	s.boot = time.Since(t0)
	harness.Logf("libvirt domain %s: agent answered after %s", d.Name, stats.Ms(s.boot))
	t0 = time.Now()
	if err := l.AgentRun(ctx, d.Name, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	}
	s.fill = time.Since(t0)
	harness.Logf("libvirt: 1 GiB written into the guest's /dev/shm in %s", stats.Ms(s.fill))

	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("prod%d", i)
		harness.Settle()
		t0 := time.Now()
		if _, err := l.Virsh(ctx, ckOpLimit, "snapshot-create-as", d.Name, name,
			"--disk-only", "--quiesce", "--atomic", "--no-metadata",
			"--diskspec", "vda,snapshot=external,file="+filepath.Join(dir, name+".qcow2")); err != nil {
			return fail("disk-only quiesced snapshot", err)
		}
		d := time.Since(t0)
		s.prod = append(s.prod, d)
		harness.Logf("libvirt disk-only quiesced %d/%d: %s", i, ckRuns, stats.Ms(d))
	}
	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("std%d", i)
		mem := filepath.Join(dir, name+".mem")
		harness.Settle()
		t0 := time.Now()
		if _, err := l.Virsh(ctx, ckOpLimit, "snapshot-create-as", d.Name, name,
			"--memspec", "file="+mem+",snapshot=external",
			"--diskspec", "vda,snapshot=external,file="+filepath.Join(dir, name+".qcow2"),
			"--atomic", "--no-metadata"); err != nil {
			return fail("snapshot with memory", err)
		}
		d := time.Since(t0)
		fi, err := os.Stat(mem)
		if err != nil {
			return fail("snapshot with memory", err)
		}
		os.Remove(mem) // 1.2 GB; not needed again
		s.std, s.stdBytes = append(s.std, d), append(s.stdBytes, fi.Size())
		harness.Logf("libvirt with memory %d/%d: %s, %s, %s", i, ckRuns, stats.Ms(d), stats.MiB(uint64(fi.Size())), stats.MiBs(stats.Throughput(fi.Size(), d)))
	}

	// Apply: libvirt reverts external snapshots only from 9.7 on (snapshot-revert).
	// Whether this one can is asked with one more disk-only snapshot, with metadata.
	if _, err := l.Virsh(ctx, ckOpLimit, "snapshot-create-as", d.Name, "revert-probe", "--disk-only", "--atomic",
		"--diskspec", "vda,snapshot=external,file="+filepath.Join(dir, "revert-probe.qcow2")); err != nil {
		s.applyNA = "the snapshot to try snapshot-revert on failed: " + err.Error()
	} else if _, err := l.Virsh(ctx, ckOpLimit, "snapshot-revert", d.Name, "revert-probe", "--running"); err != nil {
		s.applyNA = "`virsh snapshot-revert` refuses external snapshots here: " + results.LastLine(err.Error())
	} else {
		s.applyNA = "`virsh snapshot-revert` of an external snapshot works with this libvirt, but is not measured yet"
	}
	harness.Logf("libvirt apply: %s", s.applyNA)
	return s
}

// measureDisk writes ckDiskBytes of random data into path twice, 1 MiB per write:
// through the page cache then fdatasync (how a state file reaches the disk), and with
// O_DIRECT (0 when the file system refuses it). The file is removed.
func measureDisk(path string) (diskBW, error) {
	var bw diskBW
	const chunk = 1 << 20
	// Page-aligned (O_DIRECT wants it), 64 MiB of random bytes, cycled.
	buf, err := syscall.Mmap(-1, 0, 64<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return bw, err
	}
	defer syscall.Munmap(buf)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	rng.Read(buf)
	defer os.Remove(path)

	write := func(flags int) (float64, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|flags, 0o600)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		t0 := time.Now()
		for off := 0; off < ckDiskBytes; off += chunk {
			o := off % len(buf)
			if _, err := f.Write(buf[o : o+chunk]); err != nil {
				return 0, err
			}
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, err
		}
		return float64(ckDiskBytes) / (1 << 20) / time.Since(t0).Seconds(), nil
	}
	harness.Settle()
	if bw.synced, err = write(0); err != nil {
		return bw, err
	}
	os.Remove(path)
	harness.Settle()
	if bw.direct, err = write(syscall.O_DIRECT); err != nil {
		harness.Logf("O_DIRECT write into %s: %v; not measured", filepath.Dir(path), err)
		bw.direct = 0
	}
	return bw, nil
}
