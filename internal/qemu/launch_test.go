package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// qemuBin fails (never skips) without QEMU: these tests prove that the
// command line works with the real emulator.
func qemuBin(t *testing.T) string {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		t.Fatalf("%v (the qemu tests need it)", err)
	}
	return bin
}

func newUUID(t *testing.T) string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func testCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// testSpec builds a small VM in dir with one qcow2 disk made by qemu-img.
func testSpec(t *testing.T, dir string, gen int, secure bool) Spec {
	t.Helper()
	img, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal("qemu-img not found; install Debian's qemu-utils")
	}
	disk := filepath.Join(dir, "disk0.qcow2")
	if out, err := exec.CommandContext(testCtx(t), img, "create", "-q", "-f", "qcow2", disk, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	accel, err := ChooseAccel(testCtx(t), AccelAuto, HostProber{Binary: qemuBin(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{
		Name: "test-vm", UUID: newUUID(t), Generation: gen, SecureBoot: secure, CPUs: 1, MemoryBytes: 128 << 20,
		Accel: accel.Name, CPUModel: accel.CPU,
		Disks:     []DiskSpec{{ID: "disk0", Path: disk, Format: "qcow2", Boot: true}},
		Firmware:  FindFirmware(),
		QMPSocket: filepath.Join(dir, "qmp.sock"), AgentSocket: filepath.Join(dir, "qga.sock"),
		ConsoleSocket: filepath.Join(dir, "console.sock"), ConsoleLog: filepath.Join(dir, "console.log"),
		PIDFile: filepath.Join(dir, "qemu.pid"),
	}
	if gen == 2 {
		s.NVRAMPath = filepath.Join(dir, "nvram.fd")
		if err := CreateNVRAM(s.Firmware, secure, s.NVRAMPath); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestBinaryAndVersion(t *testing.T) {
	v, err := Version(testCtx(t), qemuBin(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(v, ".") {
		t.Errorf("Version = %q", v)
	}
	_, err = Version(testCtx(t), "/nonexistent/qemu")
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Version of a missing binary: %v", err)
	}
}

func TestLaunchAliveKill(t *testing.T) {
	bin := qemuBin(t)
	for _, tc := range []struct {
		name   string
		gen    int
		secure bool
	}{{"gen1", 1, false}, {"gen2", 2, false}, {"gen2-secureboot", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := testSpec(t, dir, tc.gen, tc.secure)
			args, err := Args(s)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Launch(testCtx(t), bin, args, filepath.Join(dir, "qemu.log"), nil, qmpReady(s.QMPSocket))
			if err != nil {
				t.Fatal(err)
			}
			pid := p.Pid
			t.Cleanup(func() { Kill(pid, s.UUID) })
			if !Alive(pid, s.UUID) {
				t.Fatalf("Alive(%d) = false right after Launch", pid)
			}
			if Alive(pid, newUUID(t)) {
				t.Error("Alive with another VM's uuid = true")
			}
			checkQMPGreeting(t, s.QMPSocket)
			if err := Kill(pid, s.UUID); err != nil {
				t.Fatal(err)
			}
			if Alive(pid, s.UUID) {
				t.Error("Alive after Kill = true")
			}
			if err := Kill(pid, s.UUID); err != nil {
				t.Errorf("second Kill: %v", err)
			}
			select {
			case <-p.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Process.Done not closed after Kill")
			}
			if st := p.ExitStatus(); !strings.Contains(st, "killed by signal 9") {
				t.Errorf("ExitStatus = %q, want killed by signal 9", st)
			}
		})
	}
}

// qmpReady is what hvd passes to Launch: QEMU's monitor thread greets early,
// but commands run in the main loop, so an answer to query-status means
// QEMU has initialised.
func qmpReady(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			conn.SetDeadline(dl)
		}
		r := bufio.NewReader(conn)
		for _, send := range []string{"", `{"execute":"qmp_capabilities"}`, `{"execute":"query-status"}`} {
			if send != "" {
				if _, err := conn.Write([]byte(send + "\n")); err != nil {
					return err
				}
			}
			line, err := r.ReadString('\n')
			if err != nil || !strings.Contains(line, `"QMP"`) && !strings.Contains(line, `"return"`) {
				return fmt.Errorf("QMP answered %q, %v", line, err)
			}
		}
		return nil
	}
}

func checkQMPGreeting(t *testing.T, path string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("QMP socket: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "QMP") {
		t.Fatalf("QMP greeting %q, %v", line, err)
	}
}

func TestLaunchMissingDisk(t *testing.T) {
	bin, dir := qemuBin(t), t.TempDir()
	s := testSpec(t, dir, 1, false)
	missing := filepath.Join(dir, "missing.qcow2")
	s.Disks[0].Path = missing
	args, err := Args(s)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "qemu.log")
	p, err := Launch(testCtx(t), bin, args, log, nil, qmpReady(s.QMPSocket))
	if err == nil {
		Kill(p.Pid, s.UUID)
		t.Fatal("Launch with a missing disk succeeded")
	}
	for _, want := range []string{"qemu failed to start", missing, "No such file or directory", log} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("error %q is not ErrInvalid", err)
	}
	t.Log(err)
}

func TestLaunchCanceled(t *testing.T) {
	bin, dir := qemuBin(t), t.TempDir()
	s := testSpec(t, dir, 1, false)
	args, _ := Args(s)
	c, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Launch(c, bin, args, filepath.Join(dir, "qemu.log"), nil, qmpReady(s.QMPSocket))
	if !errors.Is(err, errdefs.ErrCanceled) {
		t.Fatalf("Launch with a canceled ctx: %v", err)
	}
	time.Sleep(time.Second) // a QEMU that slipped through would have written its pid by now
	if b, err := os.ReadFile(s.PIDFile); err == nil {
		var pid int
		fmt.Sscan(string(b), &pid)
		if Alive(pid, s.UUID) {
			Kill(pid, s.UUID)
			t.Error("canceled Launch left QEMU running")
		}
	}
}

// TestLaunchKeepsStderr: what QEMU says after it has started reaches the log,
// and LastWords quotes it (QEMU prints why when it is terminated by a signal).
func TestLaunchKeepsStderr(t *testing.T) {
	bin, dir := qemuBin(t), t.TempDir()
	s := testSpec(t, dir, 1, false)
	args, _ := Args(s)
	log := filepath.Join(dir, "qemu.log")
	// An earlier start's words must not be quoted for this one.
	os.WriteFile(log, []byte("hv: earlier start\nqemu-system-x86_64: something old\n"), 0o600)
	p, err := Launch(testCtx(t), bin, args, log, nil, qmpReady(s.QMPSocket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Kill(p.Pid, s.UUID) })
	if err := syscall.Kill(p.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("QEMU did not exit on SIGTERM")
	}
	words := LastWords(log)
	if !strings.Contains(words, "terminating on signal 15") || strings.Contains(words, "something old") {
		t.Errorf("LastWords = %q, want QEMU's message about signal 15 and nothing of the earlier start", words)
	}
	if LastWords(filepath.Join(dir, "missing.log")) != "" {
		t.Error("LastWords of a missing log is not empty")
	}
}

func TestAliveGuards(t *testing.T) {
	if Alive(os.Getpid(), newUUID(t)) {
		t.Error("Alive(own pid, foreign uuid) = true")
	}
	if Alive(0, testUUID) || Alive(-1, testUUID) || Alive(os.Getpid(), "") {
		t.Error("Alive of a bad pid or empty uuid = true")
	}
	if err := Kill(os.Getpid(), newUUID(t)); err != nil {
		t.Errorf("Kill(own pid, foreign uuid) = %v, want nil and no signal", err)
	}
	// A zombie is not alive: a child that exited and was not reaped yet.
	cmd := exec.Command("/bin/sh", "-c", "exit 0", testUUID)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if strings.Contains(string(stat), ") Z ") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if Alive(cmd.Process.Pid, testUUID) {
		t.Error("Alive(zombie) = true")
	}
	cmd.Wait()
}

func TestCreateNVRAM(t *testing.T) {
	fw, dir := FindFirmware(), t.TempDir()
	if fw.UEFIVars == "" || fw.SecureBootVars == "" || fw.UEFICode == "" || fw.SecureBootCode == "" || fw.BIOS == "" {
		t.Fatalf("FindFirmware = %+v; install Debian's ovmf and seabios", fw)
	}
	for _, secure := range []bool{false, true} {
		dst := filepath.Join(dir, fmt.Sprint("nvram-", secure))
		if err := CreateNVRAM(fw, secure, dst); err != nil {
			t.Fatal(err)
		}
		tmpl := fw.UEFIVars
		if secure {
			tmpl = fw.SecureBootVars
		}
		a, _ := os.ReadFile(tmpl)
		b, _ := os.ReadFile(dst)
		if string(a) != string(b) {
			t.Errorf("secure=%v: NVRAM differs from %s", secure, tmpl)
		}
		if err := CreateNVRAM(fw, secure, dst); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("overwrite: %v, want ErrConflict", err)
		}
	}
	err := CreateNVRAM(Firmware{}, true, filepath.Join(dir, "x"))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "install Debian's ovmf") {
		t.Errorf("missing template: %v", err)
	}
}
