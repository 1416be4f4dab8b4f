// Package checkpoint is the checkpoint benchmark: `hv checkpoint create/apply`
// against libvirt's snapshots and the same steps by hand on plain QEMU (see
// bench/README.md).
package checkpoint

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	"github.com/hvproject/hv/bench/internal/plain"
	"github.com/hvproject/hv/bench/internal/rawagent"
	"github.com/hvproject/hv/bench/internal/rawqmp"
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

// plain side: the same steps by hand, raw QMP and raw guest agent.

func ckPlain(ctx context.Context, e *harness.Env, dir, image string) (s ckSide) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()
	fail := func(step string, err error) ckSide { sideFail(&s, "plain", step, err); return s }

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("setup", err)
	}
	base := filepath.Join(dir, "disk.qcow2")
	if err := harness.CopyFile(image, base); err != nil {
		return fail("disk copy", err)
	}
	p, err := plain.NewVM(ctx, dir, 2, base, ckMemMiB, ckCPUs)
	if err != nil {
		return fail("setup", err)
	}
	p.Accel, p.WithQMP = e.Host.Accel, true
	v, err := plain.StartAgentVM(ctx, e, cl, p, guest.AgentLimit)
	if err != nil {
		return fail("boot", err)
	}
	stopVM := v.Stop
	s.boot = v.Boot
	harness.Logf("plain VM: agent answered after %s", stats.Ms(s.boot))
	q, err := rawqmp.Dial(ctx, p.QMPSocket(), 10*time.Second)
	if err != nil {
		return fail("QMP", err)
	}
	t0 := time.Now()
	if st, err := v.Agent.Run(ctx, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	} else if st.ExitCode != 0 || st.Signal != 0 {
		errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
		return fail("fill the guest's RAM", fmt.Errorf("exit code %d, signal %d: %s", st.ExitCode, st.Signal, errOut))
	}
	s.fill = time.Since(t0)
	harness.Logf("plain: 1 GiB written into the guest's /dev/shm in %s", stats.Ms(s.fill))
	// As libvirt does for a save: no bandwidth limit on the migration stream.
	if err := q.Call(ctx, time.Minute, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return fail("migrate-set-parameters", err)
	}

	active := p.Overlay // the disk image QEMU writes to
	snapshot := func(name string) error {
		next := filepath.Join(dir, name+".qcow2")
		err := q.Call(ctx, ckOpLimit, "blockdev-snapshot-sync",
			map[string]any{"device": "d0", "snapshot-file": next, "format": "qcow2"}, nil)
		if err == nil {
			active = next
		}
		return err
	}
	for i := 1; i <= ckRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		var n int
		if err := v.Agent.Call(ctx, time.Minute, "guest-fsfreeze-freeze", nil, &n); err != nil {
			return fail("guest-fsfreeze-freeze", err)
		}
		frozenAt := time.Now()
		serr := snapshot(fmt.Sprintf("prod%d", i))
		terr := v.Agent.Call(ctx, time.Minute, "guest-fsfreeze-thaw", nil, nil)
		d, frozen := time.Since(t0), time.Since(frozenAt)
		if err := errors.Join(serr, terr); err != nil {
			return fail("freeze, snapshot, thaw", err)
		}
		if n == 0 {
			return fail("guest-fsfreeze-freeze", errors.New("froze no file system"))
		}
		s.prod, s.frozen = append(s.prod, d), append(s.frozen, frozen)
		harness.Logf("plain freeze + blockdev-snapshot-sync + thaw %d/%d: %s, frozen %s (%d file systems)", i, ckRuns, stats.Ms(d), stats.Ms(frozen), n)
	}
	var mem, memDisk string // the last memory checkpoint: its state file and disk
	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("std%d", i)
		if mem != "" {
			os.Remove(mem) // only the last one is applied
		}
		mem, memDisk = filepath.Join(dir, name+".mem"), active
		harness.Settle()
		run, d, size, err := plainMemoryCheckpoint(ctx, q, mem, func() error { return snapshot(name) })
		if err != nil {
			return fail("stop, migrate to file, snapshot, cont", err)
		}
		s.std, s.stdRunning, s.stdBytes = append(s.std, d), append(s.stdRunning, run), append(s.stdBytes, size)
		harness.Logf("plain stop + migrate to file + snapshot + cont %d/%d: running after %s, synced after %s, %s, %s",
			i, ckRuns, stats.Ms(run), stats.Ms(d), stats.MiB(uint64(size)), stats.MiBs(stats.Throughput(size, d)))
	}
	q.Close()

	// Apply the last memory checkpoint: kill QEMU, a new overlay on the disk as it was,
	// a new QEMU with -incoming defer, the state file through getfd + migrate-incoming,
	// until query-status says running (QEMU starts the guest by itself when the state
	// is in).
	p.Incoming = true
	for i := 1; i <= ckApplyRuns; i++ {
		harness.Settle()
		t0 := time.Now()
		stopVM()
		p.Overlay = filepath.Join(dir, fmt.Sprintf("apply%d.qcow2", i))
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", memDisk, p.Overlay).CombinedOutput()
		if err != nil {
			return fail("apply: qemu-img create", fmt.Errorf("%v: %s", err, out))
		}
		p.Reset()
		pp, err := plain.StartQEMU(e, cl, p)
		if err != nil {
			return fail("apply: start QEMU", err)
		}
		stopVM = pp.Kill
		if err := plainIncoming(ctx, p, pp, mem); err != nil {
			return fail("apply", err)
		}
		d := time.Since(t0)
		s.applyStd = append(s.applyStd, d)
		harness.Logf("plain apply (kill, overlay, QEMU -incoming, state in) %d/%d: running after %s", i, ckApplyRuns, stats.Ms(d))
		if err := plainFilled(ctx, p); err != nil {
			return fail("apply", fmt.Errorf("the guest's RAM did not come back: %w", err))
		}
	}
	stopVM()
	return s
}

// plainMemoryCheckpoint is what libvirt does for an external snapshot with memory,
// written by hand: stop, migrate into a file (fd passed with getfd), the disk
// snapshot, cont; then fdatasync of the state file. It returns the time until cont
// answered, the time until the file was synced, and the file's size.
func plainMemoryCheckpoint(ctx context.Context, q *rawqmp.Client, path string, diskSnapshot func() error) (time.Duration, time.Duration, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	t0 := time.Now()
	if err := q.Call(ctx, time.Minute, "stop", nil, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.CallFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return 0, 0, 0, err
	}
	if err := q.Call(ctx, time.Minute, "migrate", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.WaitMigration(ctx, ckOpLimit); err != nil {
		return 0, 0, 0, err
	}
	if err := diskSnapshot(); err != nil {
		return 0, 0, 0, err
	}
	if err := q.Call(ctx, time.Minute, "cont", nil, nil); err != nil {
		return 0, 0, 0, err
	}
	running := time.Since(t0)
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return 0, 0, 0, err
	}
	done := time.Since(t0)
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	return running, done, fi.Size(), nil
}

// plainFilled runs ckFilledScript through the raw agent of the QEMU p runs.
func plainFilled(ctx context.Context, p *plain.VM) error {
	a, err := rawagent.Dial(ctx, p.AgentSocket(), 30*time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	st, err := a.Run(ctx, time.Minute, "/bin/sh", "-c", ckFilledScript)
	if err == nil && (st.ExitCode != 0 || st.Signal != 0) {
		err = fmt.Errorf("%s: exit code %d, signal %d", ckFilledScript, st.ExitCode, st.Signal)
	}
	return err
}

// plainIncoming connects to the new QEMU's QMP socket (retried until it is there),
// feeds it the state file and waits until the guest runs.
func plainIncoming(ctx context.Context, p *plain.VM, pp *plain.Proc, mem string) error {
	var q *rawqmp.Client
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if q, err = rawqmp.Dial(ctx, p.QMPSocket(), 5*time.Second); err == nil {
			break
		}
		select {
		case <-pp.Exited:
			return fmt.Errorf("QEMU exited: %s", harness.Tail(pp.LogPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("QMP: %w", err)
		}
		harness.Sleep(ctx, 5*time.Millisecond)
	}
	defer q.Close()
	f, err := os.Open(mem)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := q.CallFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return err
	}
	if err := q.Call(ctx, time.Minute, "migrate-incoming", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return err
	}
	// The state was saved from a stopped guest, so QEMU ends the incoming migration
	// paused (the source's run state travels with it) and needs cont.
	st, err := q.WaitStatusNot(ctx, "inmigrate", ckOpLimit)
	if err != nil {
		return fmt.Errorf("%w; %s", err, harness.Tail(pp.LogPath))
	}
	if st == "paused" {
		if err := q.Call(ctx, time.Minute, "cont", nil, nil); err != nil {
			return err
		}
	}
	if err := q.WaitStatus(ctx, "running", time.Minute); err != nil {
		return fmt.Errorf("%w; %s", err, harness.Tail(pp.LogPath))
	}
	return nil
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

// Results.

func ckSection(e *harness.Env, r *ckResult) string {
	var b strings.Builder
	b.WriteString("## Checkpoints: `hv checkpoint` vs libvirt `virsh snapshot-create-as` vs plain QEMU\n\n")
	fmt.Fprintf(&b, "Measured %s on %s; load average %s at the start, %s at the end (when each side started: hv %s, libvirt %s, plain %s). "+
		"Guest: the tiny test guest from `%s`, generation 2 (q35, OVMF), %d MiB, %d vCPU, with %d MiB of random data "+
		"written into its `/dev/shm` before the checkpoints (dirty RAM). One VM at a time: hv, then libvirt, then plain QEMU; "+
		"%d runs of each create series (no warm-up: each run adds a checkpoint), %d of each apply series; median (min–max). "+
		"The host's dirty pages are written back (sync) before each run, outside the timing.\n\n",
		e.Host.Date, e.Host.Short(), r.load[0], r.load[1], r.hv.load, r.lv.load, r.plain.load, ckImage, ckMemMiB, ckCPUs, ckFillMiB, ckRuns, ckApplyRuns)
	if r.libvirt != "" {
		fmt.Fprintf(&b, "libvirt: %s (a private libvirtd started by the benchmark).\n\n", r.libvirt)
	}

	var dw []string
	var all []time.Duration // MiB/s scaled, for median
	for _, d := range r.disk {
		dw = append(dw, fmt.Sprintf("%.0f MiB/s buffered + fdatasync, %s O_DIRECT", d.synced, stats.MiBs(d.direct)))
		for _, v := range []float64{d.synced, d.direct} {
			if v > 0 {
				all = append(all, time.Duration(v*1e6))
			}
		}
	}
	diskRef := float64(stats.Median(all)) / 1e6
	fmt.Fprintf(&b, "Disk write bandwidth where the VM files live (%s), 1 GiB of random data in 1 MiB writes, "+
		"before / after the VMs: %s. Reference below: the median of these, **%.0f MiB/s**.\n\n",
		r.fs, strings.Join(dw, " / "), diskRef)

	hv, lv, pl := &r.hv, &r.lv, &r.plain
	b.WriteString("### Create\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / libvirt | hv / plain |\n|---|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| production: checkpoint time (disk-only, quiesced) | %s | %s | %s | %s | %s |\n",
		stats.Cell(hv.prod, stats.Ms), stats.Cell(lv.prod, stats.Ms), stats.Cell(pl.prod, stats.Ms), stats.RatioCell(hv.prod, lv.prod), stats.RatioCell(hv.prod, pl.prod))
	fmt.Fprintf(&b, "| production: guest frozen | %s | %s | %s | | %s |\n",
		stats.Cell(hv.frozen, stats.Ms), naIf(lv.prod, "not reported"), stats.Cell(pl.frozen, stats.Ms), stats.RatioCell(hv.frozen, pl.frozen))
	fmt.Fprintf(&b, "| standard: checkpoint time (memory + disks) | %s | %s | %s | %s | %s |\n",
		stats.Cell(hv.std, stats.Secs), stats.Cell(lv.std, stats.Secs), stats.Cell(pl.std, stats.Secs), stats.RatioCell(hv.std, lv.std), stats.RatioCell(hv.std, pl.std))
	sizeCell := func(s *ckSide) string {
		if len(s.stdBytes) == 0 {
			return "—"
		}
		return stats.MiB(uint64(stats.MedianSize(s.stdBytes)))
	}
	fmt.Fprintf(&b, "| standard: bytes saved | %s | %s | %s | | |\n", sizeCell(hv), sizeCell(lv), sizeCell(pl))
	tp := func(s *ckSide) float64 { return stats.MedianThroughput(s.stdBytes, s.std) }
	tpCell := func(s *ckSide) string {
		if len(s.std) == 0 {
			return "—"
		}
		return stats.MiBs(tp(s))
	}
	tpRatio := func(a, c *ckSide) string {
		if len(a.std) == 0 || len(c.std) == 0 || tp(c) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f", tp(a)/tp(c))
	}
	fmt.Fprintf(&b, "| standard: save throughput | %s | %s | %s | %s | %s |\n",
		tpCell(hv), tpCell(lv), tpCell(pl), tpRatio(hv, lv), tpRatio(hv, pl))
	pct := func(s *ckSide) string {
		if len(s.std) == 0 || diskRef == 0 {
			return "—"
		}
		return fmt.Sprintf("**%.0f%%**", 100*tp(s)/diskRef)
	}
	fmt.Fprintf(&b, "| standard: save throughput / disk bandwidth | %s | %s | %s | | |\n\n", pct(hv), pct(lv), pct(pl))
	if len(pl.stdRunning) > 0 {
		fmt.Fprintf(&b, "Plain QEMU's standard time includes the fdatasync of its state file after `cont`; its guest ran again after %s. "+
			"hv's and libvirt's are until their command returned.\n\n", stats.Cell(pl.stdRunning, stats.Secs))
	}

	b.WriteString("### Apply\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / plain |\n|---|---:|---:|---:|---:|\n")
	lvApply := "—"
	if lv.applyNA != "" {
		lvApply = "not measured¹"
	}
	fmt.Fprintf(&b, "| standard: until Running | %s | %s | %s | %s |\n",
		stats.Cell(hv.applyStd, stats.Secs), lvApply, stats.Cell(pl.applyStd, stats.Secs), stats.RatioCell(hv.applyStd, pl.applyStd))
	fmt.Fprintf(&b, "| production: until Off | %s | %s | — | |\n", stats.Cell(hv.applyProdOff, stats.Secs), lvApply)
	fmt.Fprintf(&b, "| production: then start until heartbeat | %s | — | — | |\n\n", stats.Cell(hv.applyProdHB, stats.Secs))
	if lv.applyNA != "" {
		fmt.Fprintf(&b, "¹ libvirt: %s\n\n", lv.applyNA)
	}

	for _, x := range []struct {
		name, verb string
		s          *ckSide
	}{{"hv", "not measured", hv}, {"libvirt", "not available", lv}, {"plain", "not measured", pl}} {
		switch {
		case x.s.err != nil && !x.s.measured():
			fmt.Fprintf(&b, "- **%s: %s**: %s\n", x.name, x.verb, results.OneLine(x.s.err.Error()))
		case x.s.err != nil:
			fmt.Fprintf(&b, "- **%s: stopped early**: %s\n", x.name, results.OneLine(x.s.err.Error()))
		}
	}
	b.WriteString("\nTargets (from the issue): hv at least as fast as libvirt (hv / libvirt at most 1.00 for times); " +
		"a standard checkpoint saves memory at 50% or more of the disk's write bandwidth. The benchmark does not judge them.\n\n")
	b.WriteString("How each side is timed (see bench/README.md): **hv** `hv checkpoint create VM NAME --type production|standard -o json` " +
		"from exec to exit, frozen time from the checkpoint's `frozen_seconds`; apply: `hv checkpoint apply` until `GET /1.0/vms/{name}` " +
		"says Running (standard) or Off (production), then `start` until the heartbeat event. " +
		"**libvirt** `virsh snapshot-create-as` from exec to exit: `--disk-only --quiesce --atomic --no-metadata` (external overlay, " +
		"freeze through libvirt's own agent channel), and `--memspec file=…,snapshot=external --diskspec vda,snapshot=external " +
		"--atomic --no-metadata` (libvirt pauses the guest while it saves). " +
		"**plain** raw agent + raw QMP: `guest-fsfreeze-freeze`, `blockdev-snapshot-sync`, `guest-fsfreeze-thaw` (frozen: from the " +
		"freeze's answer to the thaw's); `stop`, `migrate` to a file (`getfd`, no bandwidth limit), `blockdev-snapshot-sync`, `cont`, then fdatasync of the " +
		"file; apply: kill, a new overlay, QEMU `-incoming defer`, `migrate-incoming` from the file, `cont`, until `query-status` says running.\n")
	return results.Wrap("checkpoint", b.String())
}

func naIf(d []time.Duration, text string) string {
	if len(d) == 0 {
		return "—"
	}
	return text
}
