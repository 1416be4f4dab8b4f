// Package e2e tests hv end to end: the real hvd and hv binaries drive real QEMU
// VMs booted from the tiny test guest (make guest). Nothing is faked; a missing
// part (QEMU, firmware, the guest) fails the run.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

var (
	guestDir = flag.String("guest", "", "directory of the tiny test guest (make guest)")
	binDir   = flag.String("bin", "", "directory holding the hv and hvd binaries (make build)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *guestDir == "" || *binDir == "" {
		wd, _ := os.Getwd()
		top := filepath.Dir(wd)
		if *guestDir == "" {
			*guestDir = filepath.Join(top, "build", "guest")
		}
		if *binDir == "" {
			*binDir = filepath.Join(top, "bin")
		}
	}
	for _, f := range []string{"tiny-bios.qcow2", "tiny-uefi.qcow2", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(*guestDir, f)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: the tiny guest is missing (%v); run 'make guest' (or 'make e2e')\n", err)
			os.Exit(1)
		}
	}
	for _, b := range []string{"hv", "hvd"} {
		if _, err := os.Stat(filepath.Join(*binDir, b)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v; run 'make build' (or 'make e2e')\n", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func guest(name string) string { return filepath.Join(*guestDir, name) }

// host is one hvd instance with its own root, as a user would run it.
type host struct {
	t      *testing.T
	root   string
	socket string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	env    []string
	flags  []string // extra hvd flags
	netns  string   // hvd, its bridges and VMs live in this network namespace when set
}

// newHost starts hvd in a fresh root. Everything it started is killed at the end.
func newHost(t *testing.T, env ...string) *host {
	t.Helper()
	// Short root: the VMs' unix sockets must fit in 108 bytes.
	root, err := os.MkdirTemp("/tmp", "hve2e-")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, root: root, socket: filepath.Join(root, "hvd.sock"), env: env}
	h.setup()
	return h
}

// newHostFlags starts hvd with extra flags (e.g. --accel tcg).
func newHostFlags(t *testing.T, flags ...string) *host {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "hve2e-")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, root: root, socket: filepath.Join(root, "hvd.sock"), flags: flags}
	h.setup()
	return h
}

// newTmpfsHost starts hvd on a root that is a tmpfs of size (a disk that
// really fills up), named name in the mount table.
func newTmpfsHost(t *testing.T, size, name string) *host {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "hve2e-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", name, root).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", root).Run() })
	h := &host{t: t, root: root, socket: filepath.Join(root, "hvd.sock")}
	h.setup()
	return h
}

// newNetHost starts hvd in a fresh network namespace: its switches, taps, DHCP
// server and VMs see nothing of the machine's own network, and every packet a
// test sends stays inside.
func newNetHost(t *testing.T) *host {
	t.Helper()
	root, err := os.MkdirTemp("/tmp", "hve2e-")
	if err != nil {
		t.Fatal(err)
	}
	ns := "hv" + filepath.Base(root)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	h := &host{t: t, root: root, socket: filepath.Join(root, "hvd.sock"), netns: ns}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	h.setup()
	return h
}

// inNS runs a command in the host's network namespace (the hypervisor's view).
func (h *host) inNS(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.netns}, args...)...).CombinedOutput()
	return string(out), err
}

func (h *host) setup() {
	t, root := h.t, h.root
	t.Cleanup(func() {
		h.stopHVD()
		killQEMUs(root)
		if !t.Failed() {
			os.RemoveAll(root)
		} else {
			t.Logf("kept %s for inspection", root)
		}
	})
	h.startHVD()
}

func (h *host) startHVD(extraEnv ...string) {
	h.t.Helper()
	h.log = &bytes.Buffer{}
	argv := append([]string{filepath.Join(*binDir, "hvd"), "--root", h.root, "--socket", h.socket, "--log-level", "debug"}, h.flags...)
	if h.netns != "" {
		// ip netns exec execs hvd in place: h.cmd's pid is hvd's.
		argv = append([]string{"ip", "netns", "exec", h.netns}, argv...)
	}
	h.cmd = exec.Command(argv[0], argv[1:]...)
	h.cmd.Env = append(append(os.Environ(), h.env...), extraEnv...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { h.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", h.socket); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			h.t.Fatalf("hvd exited at start:\n%s", h.log)
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("hvd did not listen within 30s:\n%s", h.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killHVD ends hvd with SIGKILL, as a crash would.
func (h *host) killHVD() {
	if h.cmd != nil && h.cmd.Process != nil {
		h.cmd.Process.Signal(syscall.SIGKILL)
		h.waitHVD(10 * time.Second)
	}
}

func (h *host) waitHVD(d time.Duration) {
	deadline := time.Now().Add(d)
	for h.cmd.ProcessState == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *host) stopHVD() {
	if h.cmd != nil && h.cmd.Process != nil && h.cmd.ProcessState == nil {
		h.cmd.Process.Signal(syscall.SIGTERM)
		h.waitHVD(10 * time.Second)
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
		}
	}
	if h.t.Failed() && h.log != nil {
		h.t.Logf("hvd log:\n%s", h.log)
	}
}

// killQEMUs ends every QEMU whose command line mentions root: no test leaves one behind.
func killQEMUs(root string) {
	for _, pid := range qemuPIDs(root) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// qemuPIDs lists the QEMU processes whose command line mentions root.
func qemuPIDs(root string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(data, []byte("qemu-system")) || !bytes.Contains(data, []byte(root)) {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue // a zombie is already dead
		}
		out = append(out, pid)
	}
	return out
}

type result struct {
	stdout, stderr string
	code           int
}

// hv runs the CLI against this host.
func (h *host) hv(args ...string) result {
	return h.hvIn(nil, args...)
}

func (h *host) hvIn(stdin []byte, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(*binDir, "hv"), args...)
	cmd.Env = append(os.Environ(), "HV_SOCKET="+h.socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("hv %s: %v", strings.Join(args, " "), err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs the CLI and fails the test unless it succeeds.
func (h *host) must(args ...string) string {
	h.t.Helper()
	r := h.hv(args...)
	if r.code != 0 {
		h.t.Fatalf("hv %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI, expects a failure, and returns the error text.
func (h *host) fails(args ...string) string {
	h.t.Helper()
	r := h.hv(args...)
	if r.code == 0 {
		h.t.Fatalf("hv %s succeeded, want an error\nstdout: %s", strings.Join(args, " "), r.stdout)
	}
	return r.stderr
}

func (h *host) vm(name string) api.VM {
	h.t.Helper()
	var v api.VM
	out := h.must("vm", "show", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		h.t.Fatalf("hv vm show -o json: %v\n%s", err, out)
	}
	return v
}

// waitFor polls the VM until cond holds or the time runs out.
func (h *host) waitFor(name string, d time.Duration, what string, cond func(api.VM) bool) api.VM {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := h.vm(name)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("VM %s: %s not reached within %s; last: state=%s heartbeat=%s reason=%q\nconsole:\n%s",
				name, what, d, v.State, v.Heartbeat, v.StateReason, h.hv("vm", "console", name, "--show-log").stdout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitHeartbeat waits until the guest agent answers.
func (h *host) waitHeartbeat(name string) api.VM {
	h.t.Helper()
	return h.waitFor(name, 3*time.Minute, "heartbeat OK", func(v api.VM) bool { return v.Heartbeat == api.HeartbeatOK })
}

// exec runs a shell command in the guest and returns its stdout.
func (h *host) exec(name, script string) string {
	h.t.Helper()
	return h.must("vm", "exec", name, "--", "/bin/sh", "-c", script)
}

// expect fails the test unless got contains want.
func expect(t *testing.T, got, want, what string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%s: %q does not contain %q", what, got, want)
	}
}
