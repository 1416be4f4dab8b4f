package qmp

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// startQEMU runs a real, paused QEMU and returns its QMP socket path: an
// empty machine ("-machine none") unless extra names another -machine;
// extra is added to the command line. The test fails (not skips) without
// qemu-system-x86_64: CI installs it.
func startQEMU(t *testing.T, extra ...string) (string, *exec.Cmd) {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is required for this test: %v", err)
	}
	dir, err := os.MkdirTemp("", "qmpq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	args := []string{"-accel", "tcg", "-nodefaults", "-display", "none", "-S",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}
	if !slices.Contains(extra, "-machine") {
		args = append(args, "-machine", "none")
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The file appears at bind(), a moment before listen(): a dial in
		// between is refused, which a loaded machine makes likely.
		if listening(t, sock) {
			return sock, cmd
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited early: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu did not listen on its QMP socket within 10s")
		}
	}
}

// listening reports whether a unix socket listens at path, from
// /proc/net/unix, so that asking makes no connection QEMU would see.
func listening(t *testing.T, path string) bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatalf("reading /proc/net/unix: %v", err)
	}
	// Num RefCount Protocol Flags Type St Inode Path; Flags has
	// __SO_ACCEPTCON (0x10000) once listen() ran.
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == path {
			flags, err := strconv.ParseUint(f[3], 16, 32)
			return err == nil && flags&0x10000 != 0
		}
	}
	return false
}

func TestRealQEMU(t *testing.T) {
	sock, _ := startQEMU(t)
	ctx := testCtx(t)
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := c.Events()

	var ver struct {
		QEMU    struct{ Major, Minor, Micro int } `json:"qemu"`
		Package string                            `json:"package"`
	}
	if err := c.Execute(ctx, "query-version", nil, &ver); err != nil {
		t.Fatal(err)
	}
	if v := c.Version(); v.Major != ver.QEMU.Major || v.Minor != ver.QEMU.Minor || v.Major < 2 {
		t.Errorf("greeting version %+v, query-version %+v", v, ver)
	}
	t.Logf("QEMU %+v", c.Version())

	st, err := c.Status(ctx)
	if err != nil || st.Status != "prelaunch" || st.Running {
		t.Fatalf("Status = %+v, %v; want prelaunch", st, err)
	}
	if err := c.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	if ev := recvEvent(t, events); ev.Name != "RESUME" || ev.Timestamp.IsZero() {
		t.Errorf("after cont: event %+v", ev)
	}
	if st, err := c.Status(ctx); err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("Status = %+v, %v; want running", st, err)
	}
	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	if ev := recvEvent(t, events); ev.Name != "STOP" {
		t.Errorf("after stop: event %+v", ev)
	}
	if st, err := c.Status(ctx); err != nil || st.Status != "paused" {
		t.Fatalf("Status = %+v, %v; want paused", st, err)
	}

	// getfd without a descriptor is QEMU's error; with one it succeeds.
	err = c.Execute(ctx, "getfd", map[string]string{"fdname": "p"}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Errorf("getfd without fd = %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := c.ExecuteWithFD(ctx, "getfd", map[string]string{"fdname": "p"}, w, nil); err != nil {
		t.Fatalf("getfd: %v", err)
	}
	if err := c.Execute(ctx, "closefd", map[string]string{"fdname": "p"}, nil); err != nil {
		t.Errorf("closefd of the passed fd: %v", err)
	}
	err = c.Execute(ctx, "no-such-command", nil, nil)
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command = %v", err)
	}
	var schema []map[string]any
	if err := c.Execute(ctx, "query-qmp-schema", nil, &schema); err != nil || len(schema) < 100 {
		t.Errorf("query-qmp-schema: %d entries, %v", len(schema), err)
	}

	if err := c.Execute(ctx, "quit", nil, nil); err != nil {
		t.Fatalf("quit: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after quit")
	}
	if !errors.Is(c.Err(), errdefs.ErrUnavailable) || !strings.Contains(c.Err().Error(), "closed the connection") {
		t.Errorf("Err() = %v", c.Err())
	}
	var names []string
	for ev := range events {
		names = append(names, ev.Name)
	}
	t.Logf("events after stop: %v; Err: %v", names, c.Err())
	if len(names) == 0 || names[len(names)-1] != "SHUTDOWN" {
		t.Errorf("events after quit = %v, want SHUTDOWN last", names)
	}
}

func TestRealQEMUConcurrent(t *testing.T) {
	sock, _ := startQEMU(t)
	ctx := testCtx(t)
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := make(chan error, 64)
	for range 64 {
		go func() {
			_, err := c.Status(ctx)
			errs <- err
		}()
	}
	for range 64 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
