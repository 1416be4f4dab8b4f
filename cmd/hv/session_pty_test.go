//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/cli"
	"github.com/hvproject/hv/internal/cli/clitest"

	"github.com/hvproject/hv/api"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// openPTY opens a pseudo-terminal pair, or skips the test where there is none.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// syncBuffer is a bytes.Buffer safe to read while hv writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestExecInteractiveSession(t *testing.T) {
	f := clitest.NewFakeHVD(t, testVMs()...)
	f.SessionExit = 3
	master, slave := openPTY(t)
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 132}); err != nil {
		t.Fatal(err)
	}
	before, err := term.GetState(int(slave.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb syncBuffer
	env := func(k string) string {
		if k == "HV_SOCKET" {
			return f.Socket
		}
		return ""
	}
	a := &cli.App{Stdin: slave, Stdout: &out, Stderr: &errb, Getenv: env}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- execute(ctx, a, []string{"vm", "exec", "-it", "web1", "--", "sh"}) }()

	// Type once the session is up (the prompt shows), then end it; Ctrl-C and Ctrl-] are
	// plain bytes for the guest.
	for !strings.Contains(out.String(), "$ ") {
		time.Sleep(10 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("no prompt; stderr %q", errb.String())
		}
	}
	master.Write([]byte("echo hi\x03\x1d\r"))
	master.Write([]byte("exit\r"))
	var code int
	select {
	case code = <-done:
	case <-ctx.Done():
		t.Fatalf("hv did not end; stdout %q", out.String())
	}
	if code != 3 {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	if got := out.String(); got != "$ ECHO HI\x03\x1d\r\n$ exit\r\n" {
		t.Fatalf("stdout %q", got)
	}
	var req api.ExecRequest
	if err := json.Unmarshal([]byte(f.Body("POST /1.0/vms/web1/exec")), &req); err != nil {
		t.Fatal(err)
	}
	if !req.Interactive || req.Rows != 40 || req.Cols != 132 || req.Timeout != 0 || strings.Join(req.Command, " ") != "sh" {
		t.Fatalf("request %+v", req)
	}
	after, err := term.GetState(int(slave.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Fatal("the terminal was not restored")
	}
}
