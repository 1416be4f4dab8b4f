package main

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

// settle writes back what earlier runs left dirty in the host's page cache (sync(2)),
// outside the timing, so that a run does not pay for the one before it.
func settle() { syscall.Sync() }

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

// runCheckpoint measures checkpoint create and apply of hv against libvirt's
// snapshot-create-as and against the same steps done by hand on plain QEMU (QMP +
// guest agent), one VM at a time: hv, libvirt, plain. The disk's write bandwidth is
// measured before and after, in the same directory.
func runCheckpoint(ctx context.Context, e *env) (string, error) {
	cl := &cleanup{}
	e.cleanup.add(cl.run)
	defer cl.run()

	work, err := os.MkdirTemp("/tmp", "hvbck")
	if err != nil {
		return "", err
	}
	cl.add(func() { os.RemoveAll(work) })
	r := &ckResult{load: [2]string{loadAvg()}, fs: fsOf(work)}
	image := filepath.Join(e.guest, ckImage)

	bw, err := measureDisk(filepath.Join(work, "disk-test"))
	if err != nil {
		return "", fmt.Errorf("disk bandwidth: %w", err)
	}
	logf("disk under %s: %.0f MiB/s buffered + fdatasync, %s O_DIRECT", work, bw.synced, mibs(bw.direct))
	r.disk = append(r.disk, bw)

	load := loadAvg()
	logf("-- hv (load average %s)", load)
	r.hv = ckHV(ctx, e, image)
	r.hv.load, load = load, loadAvg()
	logf("-- libvirt (load average %s)", load)
	r.lv = ckLibvirt(ctx, e, filepath.Join(work, "libvirt"), image, &r.libvirt)
	r.lv.load, load = load, loadAvg()
	logf("-- plain QEMU (load average %s)", load)
	r.plain = ckPlain(ctx, e, filepath.Join(work, "plain"), image)
	r.plain.load = load
	if ctx.Err() != nil {
		return "", ctx.Err()
	}

	if bw, err = measureDisk(filepath.Join(work, "disk-test")); err != nil {
		return "", fmt.Errorf("disk bandwidth: %w", err)
	}
	logf("disk under %s: %.0f MiB/s buffered + fdatasync, %s O_DIRECT", work, bw.synced, mibs(bw.direct))
	r.disk = append(r.disk, bw)
	r.load[1] = loadAvg()

	if !r.hv.measured() && !r.lv.measured() && !r.plain.measured() {
		return "", fmt.Errorf("nothing measured: hv: %v; libvirt: %v; plain: %v", r.hv.err, r.lv.err, r.plain.err)
	}
	return ckSection(e, r), nil
}

// sideFail records why a side stopped and logs it.
func sideFail(s *ckSide, side, step string, err error) {
	s.err = fmt.Errorf("%s: %w", step, err)
	logf("%s: %v", side, s.err)
}

// hv side: hvd through its CLI (hv checkpoint create/apply), as a user would.

func ckHV(ctx context.Context, e *env, image string) (s ckSide) {
	cl := &cleanup{}
	e.cleanup.add(cl.run)
	defer cl.run()
	fail := func(step string, err error) ckSide { sideFail(&s, "hv", step, err); return s }

	hvBin := filepath.Join(e.bin, "hv")
	if _, err := os.Stat(hvBin); err != nil {
		return fail("hv CLI", fmt.Errorf("missing in %s; run make build", e.bin))
	}
	h, err := startHVD(ctx, e, cl, "")
	if err != nil {
		return fail("hvd", err)
	}
	const name = "ckpt"
	bt, poll, err := h.createAndBoot(ctx, e, api.VMCreate{Name: name, Generation: 2, CPUs: ckCPUs,
		Memory: fmt.Sprintf("%dM", ckMemMiB), Image: image})
	if err != nil {
		return fail("boot", err)
	}
	s.boot = bt.heartbeat
	t0 := time.Now()
	if _, err := hvExecLimit(ctx, h.c, name, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	}
	s.fill = time.Since(t0)
	logf("hv: 1 GiB written into the guest's /dev/shm in %s", ms(s.fill))

	cli := func(args ...string) ([]byte, time.Duration, error) {
		cmd := exec.CommandContext(ctx, hvBin, append([]string{"--socket", h.c.Socket(), "-q"}, args...)...)
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
		settle()
		c, d, err := create(fmt.Sprintf("prod%d", i), api.CheckpointProduction)
		if err != nil {
			return fail("production checkpoint", err)
		}
		if c.FellBack {
			return fail("production checkpoint", fmt.Errorf("fell back to a standard checkpoint: %s", c.FallbackReason))
		}
		frozen := time.Duration(c.FrozenSeconds * float64(time.Second))
		s.prod, s.frozen = append(s.prod, d), append(s.frozen, frozen)
		logf("hv production %d/%d: %s, frozen %s", i, ckRuns, ms(d), ms(frozen))
	}
	lastStd := ""
	for i := 1; i <= ckRuns; i++ {
		lastStd = fmt.Sprintf("std%d", i)
		settle()
		c, d, err := create(lastStd, api.CheckpointStandard)
		if err != nil {
			return fail("standard checkpoint", err)
		}
		if !c.HasMemory {
			return fail("standard checkpoint", fmt.Errorf("%s holds no memory (has_memory false)", c.Name))
		}
		s.std, s.stdBytes = append(s.std, d), append(s.stdBytes, int64(c.SizeBytes))
		logf("hv standard %d/%d: %s, %s, %s", i, ckRuns, ms(d), mib(c.SizeBytes), mibs(throughput(int64(c.SizeBytes), d)))
	}

	for i := 1; i <= ckApplyRuns; i++ {
		settle()
		t0 := time.Now()
		if _, _, err := cli("checkpoint", "apply", name, lastStd); err != nil {
			return fail("apply standard", err)
		}
		if err := h.waitState(ctx, name, api.StateRunning, ckOpLimit); err != nil {
			return fail("apply standard", err)
		}
		d := time.Since(t0)
		s.applyStd = append(s.applyStd, d)
		logf("hv apply standard %d/%d: Running after %s", i, ckApplyRuns, ms(d))
		if _, err := hvExecLimit(ctx, h.c, name, time.Minute, "/bin/sh", "-c", ckFilledScript); err != nil {
			return fail("apply standard", fmt.Errorf("the guest's RAM did not come back: %w", err))
		}
	}
	for i := 1; i <= ckApplyRuns; i++ {
		settle()
		t0 := time.Now()
		if _, _, err := cli("checkpoint", "apply", name, "prod1"); err != nil {
			return fail("apply production", err)
		}
		if err := h.waitState(ctx, name, api.StateOff, ckOpLimit); err != nil {
			return fail("apply production", err)
		}
		d := time.Since(t0)
		bt, _, err := h.startAndWaitHeartbeat(ctx, name, poll, agentLimit)
		if err != nil {
			return fail("start after apply production", err)
		}
		s.applyProdOff, s.applyProdHB = append(s.applyProdOff, d), append(s.applyProdHB, bt.heartbeat)
		logf("hv apply production %d/%d: Off after %s, start to heartbeat %s", i, ckApplyRuns, ms(d), ms(bt.heartbeat))
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

// waitState polls the VM (every 50 ms) until it is in state want.
func (h *hvd) waitState(ctx context.Context, name, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		vm, err := h.c.GetVM(ctx, name)
		if err != nil {
			return err
		}
		if vm.State == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still %s after %s, waiting for %s", name, vm.State, limit, want)
		}
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// libvirt side: a private libvirtd (libvirt.go) and virsh snapshot-create-as.

func ckLibvirt(ctx context.Context, e *env, dir, image string, version *string) (s ckSide) {
	cl := &cleanup{}
	e.cleanup.add(cl.run)
	defer cl.run()
	fail := func(step string, err error) ckSide { sideFail(&s, "libvirt", step, err); return s }

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("setup", err)
	}
	l, err := startLibvirtd(ctx, cl, dir)
	if err != nil {
		return fail("libvirtd", err)
	}
	*version = l.version
	d := libvirtDomain{name: "hvbench-ckpt", disk: filepath.Join(dir, "disk.qcow2"), vars: filepath.Join(dir, "vars.fd"),
		serial: filepath.Join(dir, "serial.log"), memMiB: ckMemMiB, cpus: ckCPUs, accel: e.host.accel}
	if err := copyFile(image, d.disk); err != nil {
		return fail("disk copy", err)
	}
	if err := copyFile(ovmfVars, d.vars); err != nil {
		return fail("OVMF VARS copy", err)
	}
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(d.xml()), 0o644); err != nil {
		return fail("domain XML", err)
	}
	t0 := time.Now()
	if _, err := l.virsh(ctx, time.Minute, "create", xmlPath); err != nil {
		return fail("virsh create", err)
	}
	if _, err := l.waitAgent(ctx, d.name, agentLimit); err != nil {
		return fail("boot", fmt.Errorf("%w; %s", err, tail(d.serial)))
	}
	s.boot = time.Since(t0)
	logf("libvirt domain %s: agent answered after %s", d.name, ms(s.boot))
	t0 = time.Now()
	if err := l.agentRun(ctx, d.name, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	}
	s.fill = time.Since(t0)
	logf("libvirt: 1 GiB written into the guest's /dev/shm in %s", ms(s.fill))

	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("prod%d", i)
		settle()
		t0 := time.Now()
		if _, err := l.virsh(ctx, ckOpLimit, "snapshot-create-as", d.name, name,
			"--disk-only", "--quiesce", "--atomic", "--no-metadata",
			"--diskspec", "vda,snapshot=external,file="+filepath.Join(dir, name+".qcow2")); err != nil {
			return fail("disk-only quiesced snapshot", err)
		}
		d := time.Since(t0)
		s.prod = append(s.prod, d)
		logf("libvirt disk-only quiesced %d/%d: %s", i, ckRuns, ms(d))
	}
	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("std%d", i)
		mem := filepath.Join(dir, name+".mem")
		settle()
		t0 := time.Now()
		if _, err := l.virsh(ctx, ckOpLimit, "snapshot-create-as", d.name, name,
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
		logf("libvirt with memory %d/%d: %s, %s, %s", i, ckRuns, ms(d), mib(uint64(fi.Size())), mibs(throughput(fi.Size(), d)))
	}

	// Apply: libvirt reverts external snapshots only from 9.7 on (snapshot-revert).
	// Whether this one can is asked with one more disk-only snapshot, with metadata.
	if _, err := l.virsh(ctx, ckOpLimit, "snapshot-create-as", d.name, "revert-probe", "--disk-only", "--atomic",
		"--diskspec", "vda,snapshot=external,file="+filepath.Join(dir, "revert-probe.qcow2")); err != nil {
		s.applyNA = "the snapshot to try snapshot-revert on failed: " + err.Error()
	} else if _, err := l.virsh(ctx, ckOpLimit, "snapshot-revert", d.name, "revert-probe", "--running"); err != nil {
		s.applyNA = "`virsh snapshot-revert` refuses external snapshots here: " + lastLine(err.Error())
	} else {
		s.applyNA = "`virsh snapshot-revert` of an external snapshot works with this libvirt, but is not measured yet"
	}
	logf("libvirt apply: %s", s.applyNA)
	return s
}

// plain side: the same steps by hand, raw QMP and raw guest agent.

func ckPlain(ctx context.Context, e *env, dir, image string) (s ckSide) {
	cl := &cleanup{}
	e.cleanup.add(cl.run)
	defer cl.run()
	fail := func(step string, err error) ckSide { sideFail(&s, "plain", step, err); return s }

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail("setup", err)
	}
	base := filepath.Join(dir, "disk.qcow2")
	if err := copyFile(image, base); err != nil {
		return fail("disk copy", err)
	}
	p, err := newPlainVM(ctx, dir, 2, base, ckMemMiB, ckCPUs)
	if err != nil {
		return fail("setup", err)
	}
	p.accel, p.withQMP = e.host.accel, true
	v, err := startPlainAgentVM(ctx, e, cl, p, agentLimit)
	if err != nil {
		return fail("boot", err)
	}
	stopVM := v.stop
	s.boot = v.boot
	logf("plain VM: agent answered after %s", ms(s.boot))
	q, err := dialRawQMP(ctx, p.qmpSocket(), 10*time.Second)
	if err != nil {
		return fail("QMP", err)
	}
	t0 := time.Now()
	if st, err := v.agent.run(ctx, ckFillLimit, "/bin/sh", "-c", ckFillScript); err != nil {
		return fail("fill the guest's RAM", err)
	} else if st.ExitCode != 0 || st.Signal != 0 {
		errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
		return fail("fill the guest's RAM", fmt.Errorf("exit code %d, signal %d: %s", st.ExitCode, st.Signal, errOut))
	}
	s.fill = time.Since(t0)
	logf("plain: 1 GiB written into the guest's /dev/shm in %s", ms(s.fill))
	// As libvirt does for a save: no bandwidth limit on the migration stream.
	if err := q.call(ctx, time.Minute, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40}, nil); err != nil {
		return fail("migrate-set-parameters", err)
	}

	active := p.overlay // the disk image QEMU writes to
	snapshot := func(name string) error {
		next := filepath.Join(dir, name+".qcow2")
		err := q.call(ctx, ckOpLimit, "blockdev-snapshot-sync",
			map[string]any{"device": "d0", "snapshot-file": next, "format": "qcow2"}, nil)
		if err == nil {
			active = next
		}
		return err
	}
	for i := 1; i <= ckRuns; i++ {
		settle()
		t0 := time.Now()
		var n int
		if err := v.agent.call(ctx, time.Minute, "guest-fsfreeze-freeze", nil, &n); err != nil {
			return fail("guest-fsfreeze-freeze", err)
		}
		frozenAt := time.Now()
		serr := snapshot(fmt.Sprintf("prod%d", i))
		terr := v.agent.call(ctx, time.Minute, "guest-fsfreeze-thaw", nil, nil)
		d, frozen := time.Since(t0), time.Since(frozenAt)
		if err := errors.Join(serr, terr); err != nil {
			return fail("freeze, snapshot, thaw", err)
		}
		if n == 0 {
			return fail("guest-fsfreeze-freeze", errors.New("froze no file system"))
		}
		s.prod, s.frozen = append(s.prod, d), append(s.frozen, frozen)
		logf("plain freeze + blockdev-snapshot-sync + thaw %d/%d: %s, frozen %s (%d file systems)", i, ckRuns, ms(d), ms(frozen), n)
	}
	var mem, memDisk string // the last memory checkpoint: its state file and disk
	for i := 1; i <= ckRuns; i++ {
		name := fmt.Sprintf("std%d", i)
		if mem != "" {
			os.Remove(mem) // only the last one is applied
		}
		mem, memDisk = filepath.Join(dir, name+".mem"), active
		settle()
		run, d, size, err := plainMemoryCheckpoint(ctx, q, mem, func() error { return snapshot(name) })
		if err != nil {
			return fail("stop, migrate to file, snapshot, cont", err)
		}
		s.std, s.stdRunning, s.stdBytes = append(s.std, d), append(s.stdRunning, run), append(s.stdBytes, size)
		logf("plain stop + migrate to file + snapshot + cont %d/%d: running after %s, synced after %s, %s, %s",
			i, ckRuns, ms(run), ms(d), mib(uint64(size)), mibs(throughput(size, d)))
	}
	q.Close()

	// Apply the last memory checkpoint: kill QEMU, a new overlay on the disk as it was,
	// a new QEMU with -incoming defer, the state file through getfd + migrate-incoming,
	// until query-status says running (QEMU starts the guest by itself when the state
	// is in).
	p.incoming = true
	for i := 1; i <= ckApplyRuns; i++ {
		settle()
		t0 := time.Now()
		stopVM()
		p.overlay = filepath.Join(dir, fmt.Sprintf("apply%d.qcow2", i))
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", memDisk, p.overlay).CombinedOutput()
		if err != nil {
			return fail("apply: qemu-img create", fmt.Errorf("%v: %s", err, out))
		}
		p.reset()
		pp, err := startPlainQEMU(e, cl, p)
		if err != nil {
			return fail("apply: start QEMU", err)
		}
		stopVM = pp.kill
		if err := plainIncoming(ctx, p, pp, mem); err != nil {
			return fail("apply", err)
		}
		d := time.Since(t0)
		s.applyStd = append(s.applyStd, d)
		logf("plain apply (kill, overlay, QEMU -incoming, state in) %d/%d: running after %s", i, ckApplyRuns, ms(d))
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
func plainMemoryCheckpoint(ctx context.Context, q *rawQMP, path string, diskSnapshot func() error) (time.Duration, time.Duration, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	t0 := time.Now()
	if err := q.call(ctx, time.Minute, "stop", nil, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.callFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return 0, 0, 0, err
	}
	if err := q.call(ctx, time.Minute, "migrate", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return 0, 0, 0, err
	}
	if err := q.waitMigration(ctx, ckOpLimit); err != nil {
		return 0, 0, 0, err
	}
	if err := diskSnapshot(); err != nil {
		return 0, 0, 0, err
	}
	if err := q.call(ctx, time.Minute, "cont", nil, nil); err != nil {
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
func plainFilled(ctx context.Context, p *plainVM) error {
	a, err := dialRawAgent(ctx, p.agentSocket(), 30*time.Second)
	if err != nil {
		return err
	}
	defer a.Close()
	st, err := a.run(ctx, time.Minute, "/bin/sh", "-c", ckFilledScript)
	if err == nil && (st.ExitCode != 0 || st.Signal != 0) {
		err = fmt.Errorf("%s: exit code %d, signal %d", ckFilledScript, st.ExitCode, st.Signal)
	}
	return err
}

// plainIncoming connects to the new QEMU's QMP socket (retried until it is there),
// feeds it the state file and waits until the guest runs.
func plainIncoming(ctx context.Context, p *plainVM, pp *plainProc, mem string) error {
	var q *rawQMP
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if q, err = dialRawQMP(ctx, p.qmpSocket(), 5*time.Second); err == nil {
			break
		}
		select {
		case <-pp.exited:
			return fmt.Errorf("QEMU exited: %s", tail(pp.logPath))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("QMP: %w", err)
		}
		sleep(ctx, 5*time.Millisecond)
	}
	defer q.Close()
	f, err := os.Open(mem)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := q.callFD(ctx, time.Minute, "getfd", map[string]any{"fdname": "ckpt"}, nil, int(f.Fd())); err != nil {
		return err
	}
	if err := q.call(ctx, time.Minute, "migrate-incoming", map[string]any{"uri": "fd:ckpt"}, nil); err != nil {
		return err
	}
	// The state was saved from a stopped guest, so QEMU ends the incoming migration
	// paused (the source's run state travels with it) and needs cont.
	st, err := q.waitStatusNot(ctx, "inmigrate", ckOpLimit)
	if err != nil {
		return fmt.Errorf("%w; %s", err, tail(pp.logPath))
	}
	if st == "paused" {
		if err := q.call(ctx, time.Minute, "cont", nil, nil); err != nil {
			return err
		}
	}
	if err := q.waitStatus(ctx, "running", time.Minute); err != nil {
		return fmt.Errorf("%w; %s", err, tail(pp.logPath))
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
	settle()
	if bw.synced, err = write(0); err != nil {
		return bw, err
	}
	os.Remove(path)
	settle()
	if bw.direct, err = write(syscall.O_DIRECT); err != nil {
		logf("O_DIRECT write into %s: %v; not measured", filepath.Dir(path), err)
		bw.direct = 0
	}
	return bw, nil
}

// fsOf names the file system dir is on: "ext4 on /dev/vda (/)", from /proc/self/mountinfo.
func fsOf(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown file system"
	}
	best, what := -1, "unknown file system"
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, what = len(mp), fmt.Sprintf("%s on %s (%s)", g[0], g[1], mp)
		}
	}
	return what
}

func throughput(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / (1 << 20) / d.Seconds()
}

func mibs(v float64) string {
	if v <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f MiB/s", v)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Results.

// medianThroughput is the throughput of each run (bytes[i] / d[i]), median.
func medianThroughput(bytes []int64, d []time.Duration) float64 {
	var v []time.Duration // reuse median: MiB/s scaled into a Duration
	for i := range d {
		if i < len(bytes) {
			v = append(v, time.Duration(throughput(bytes[i], d[i])*1e6))
		}
	}
	return float64(median(v)) / 1e6
}

func medianSize(b []int64) int64 {
	var v []time.Duration
	for _, x := range b {
		v = append(v, time.Duration(x))
	}
	return int64(median(v))
}

// cell is a series' median with its range, or why there is none.
func cell(d []time.Duration, f func(time.Duration) string) string {
	if len(d) == 0 {
		return "—"
	}
	if len(d) == 1 {
		return f(d[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(median(d)), f(minDur(d)), f(maxDur(d)))
}

func ratioCell(a, b []time.Duration) string {
	if len(a) == 0 || len(b) == 0 {
		return "—"
	}
	return fmt.Sprintf("**%.2f**", ratio(median(a), median(b)))
}

func ckSection(e *env, r *ckResult) string {
	var b strings.Builder
	b.WriteString("## Checkpoints: `hv checkpoint` vs libvirt `virsh snapshot-create-as` vs plain QEMU\n\n")
	fmt.Fprintf(&b, "Measured %s on %s; load average %s at the start, %s at the end (when each side started: hv %s, libvirt %s, plain %s). "+
		"Guest: the tiny test guest from `%s`, generation 2 (q35, OVMF), %d MiB, %d vCPU, with %d MiB of random data "+
		"written into its `/dev/shm` before the checkpoints (dirty RAM). One VM at a time: hv, then libvirt, then plain QEMU; "+
		"%d runs of each create series (no warm-up: each run adds a checkpoint), %d of each apply series; median (min–max). "+
		"The host's dirty pages are written back (sync) before each run, outside the timing.\n\n",
		e.host.date, e.host.short(), r.load[0], r.load[1], r.hv.load, r.lv.load, r.plain.load, ckImage, ckMemMiB, ckCPUs, ckFillMiB, ckRuns, ckApplyRuns)
	if r.libvirt != "" {
		fmt.Fprintf(&b, "libvirt: %s (a private libvirtd started by the benchmark).\n\n", r.libvirt)
	}

	var dw []string
	var all []time.Duration // MiB/s scaled, for median
	for _, d := range r.disk {
		dw = append(dw, fmt.Sprintf("%.0f MiB/s buffered + fdatasync, %s O_DIRECT", d.synced, mibs(d.direct)))
		for _, v := range []float64{d.synced, d.direct} {
			if v > 0 {
				all = append(all, time.Duration(v*1e6))
			}
		}
	}
	diskRef := float64(median(all)) / 1e6
	fmt.Fprintf(&b, "Disk write bandwidth where the VM files live (%s), 1 GiB of random data in 1 MiB writes, "+
		"before / after the VMs: %s. Reference below: the median of these, **%.0f MiB/s**.\n\n",
		r.fs, strings.Join(dw, " / "), diskRef)

	hv, lv, pl := &r.hv, &r.lv, &r.plain
	b.WriteString("### Create\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / libvirt | hv / plain |\n|---|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| production: checkpoint time (disk-only, quiesced) | %s | %s | %s | %s | %s |\n",
		cell(hv.prod, ms), cell(lv.prod, ms), cell(pl.prod, ms), ratioCell(hv.prod, lv.prod), ratioCell(hv.prod, pl.prod))
	fmt.Fprintf(&b, "| production: guest frozen | %s | %s | %s | | %s |\n",
		cell(hv.frozen, ms), naIf(lv.prod, "not reported"), cell(pl.frozen, ms), ratioCell(hv.frozen, pl.frozen))
	fmt.Fprintf(&b, "| standard: checkpoint time (memory + disks) | %s | %s | %s | %s | %s |\n",
		cell(hv.std, secs), cell(lv.std, secs), cell(pl.std, secs), ratioCell(hv.std, lv.std), ratioCell(hv.std, pl.std))
	sizeCell := func(s *ckSide) string {
		if len(s.stdBytes) == 0 {
			return "—"
		}
		return mib(uint64(medianSize(s.stdBytes)))
	}
	fmt.Fprintf(&b, "| standard: bytes saved | %s | %s | %s | | |\n", sizeCell(hv), sizeCell(lv), sizeCell(pl))
	tp := func(s *ckSide) float64 { return medianThroughput(s.stdBytes, s.std) }
	tpCell := func(s *ckSide) string {
		if len(s.std) == 0 {
			return "—"
		}
		return mibs(tp(s))
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
			"hv's and libvirt's are until their command returned.\n\n", cell(pl.stdRunning, secs))
	}

	b.WriteString("### Apply\n\n")
	b.WriteString("| | hv | libvirt | plain QEMU | hv / plain |\n|---|---:|---:|---:|---:|\n")
	lvApply := "—"
	if lv.applyNA != "" {
		lvApply = "not measured¹"
	}
	fmt.Fprintf(&b, "| standard: until Running | %s | %s | %s | %s |\n",
		cell(hv.applyStd, secs), lvApply, cell(pl.applyStd, secs), ratioCell(hv.applyStd, pl.applyStd))
	fmt.Fprintf(&b, "| production: until Off | %s | %s | — | |\n", cell(hv.applyProdOff, secs), lvApply)
	fmt.Fprintf(&b, "| production: then start until heartbeat | %s | — | — | |\n\n", cell(hv.applyProdHB, secs))
	if lv.applyNA != "" {
		fmt.Fprintf(&b, "¹ libvirt: %s\n\n", lv.applyNA)
	}

	for _, x := range []struct {
		name, verb string
		s          *ckSide
	}{{"hv", "not measured", hv}, {"libvirt", "not available", lv}, {"plain", "not measured", pl}} {
		switch {
		case x.s.err != nil && !x.s.measured():
			fmt.Fprintf(&b, "- **%s: %s**: %s\n", x.name, x.verb, oneLine(x.s.err.Error()))
		case x.s.err != nil:
			fmt.Fprintf(&b, "- **%s: stopped early**: %s\n", x.name, oneLine(x.s.err.Error()))
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
	return wrapSection("checkpoint", b.String())
}

func naIf(d []time.Duration, text string) string {
	if len(d) == 0 {
		return "—"
	}
	return text
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return strings.ReplaceAll(s, "|", "\\|")
}
