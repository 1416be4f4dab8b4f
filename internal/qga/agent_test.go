package qga

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startRealAgent runs the stock qemu-ga on a unix socket on this host. The
// test fails (not skips) without it: CI installs qemu-guest-agent.
func startRealAgent(t *testing.T) *Client {
	t.Helper()
	return startRealAgentWith(t, nil)
}

// startRealAgentWith is startRealAgent with prepare, if not nil, run on the
// agent's state directory before it starts.
func startRealAgentWith(t *testing.T, prepare func(stateDir string)) *Client {
	t.Helper()
	bin, err := exec.LookPath("qemu-ga")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/qemu-ga"); serr != nil {
			t.Fatalf("qemu-ga is required for this test (apt-get install qemu-guest-agent): %v", err)
		}
		bin = "/usr/sbin/qemu-ga"
	}
	dir, err := os.MkdirTemp("", "qgar")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if prepare != nil {
		prepare(dir)
	}
	sock := filepath.Join(dir, "qga.sock")
	cmd := exec.Command(bin, "-m", "unix-listen", "-p", sock, "-t", dir, "-f", filepath.Join(dir, "pid"))
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
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close() // qemu-ga serves one client at a time and takes the next
			break
		}
		select {
		case <-exited:
			t.Fatalf("qemu-ga exited early: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-ga did not listen within 10s")
		}
	}
	c, err := Dial(testCtx(t), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRealAgent(t *testing.T) {
	c := startRealAgent(t)
	ctx := testCtx(t)

	t.Run("ping", func(t *testing.T) {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("info", func(t *testing.T) {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("qemu-ga %s, %d commands", info.Version, len(info.Commands))
		found := map[string]Command{}
		for _, cmd := range info.Commands {
			found[cmd.Name] = cmd
		}
		if info.Version == "" || !found["guest-exec"].Enabled || !found["guest-ping"].SuccessResponse {
			t.Errorf("info = %+v", info)
		}
		if sd, ok := found["guest-shutdown"]; !ok || sd.SuccessResponse {
			t.Errorf("guest-shutdown = %+v, want success-response false", sd)
		}
	})
	t.Run("exec exit code and outputs", func(t *testing.T) {
		st, err := c.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exit 3"}})
		if err != nil {
			t.Fatal(err)
		}
		if !st.Exited || st.ExitCode != 3 || st.Signal != 0 || string(st.Stdout) != "out\n" || string(st.Stderr) != "err\n" || st.Truncated {
			t.Errorf("status = %+v (stdout %q, stderr %q)", st, st.Stdout, st.Stderr)
		}
	})
	t.Run("exec stdin", func(t *testing.T) {
		in := []byte("line one\nline two\x00binary\xff\n")
		st, err := c.Run(ctx, ExecRequest{Path: "cat", Input: in})
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 0 || !bytes.Equal(st.Stdout, in) {
			t.Errorf("cat gave %q, exit %d", st.Stdout, st.ExitCode)
		}
	})
	t.Run("exec env", func(t *testing.T) {
		st, err := c.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "echo $HV_TEST"}, Env: []string{"HV_TEST=hello"}})
		if err != nil || string(st.Stdout) != "hello\n" {
			t.Errorf("env: %q, %v", st.Stdout, err)
		}
	})
	t.Run("exec 1 MiB output", func(t *testing.T) {
		st, err := c.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "head -c 1048576 /dev/zero | tr '\\0' a"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Stdout) != 1<<20 || st.Truncated || bytes.Count(st.Stdout, []byte("a")) != 1<<20 {
			t.Errorf("got %d bytes, truncated %v", len(st.Stdout), st.Truncated)
		}
	})
	t.Run("exec signal", func(t *testing.T) {
		st, err := c.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "kill -9 $$"}})
		if err != nil || !st.Exited || st.Signal != 9 {
			t.Errorf("status = %+v, %v", st, err)
		}
	})
	t.Run("error answer", func(t *testing.T) {
		_, err := c.ExecStatus(ctx, 999999)
		var ge *Error
		if !errors.As(err, &ge) || !strings.Contains(ge.Desc, "pid") {
			t.Errorf("ExecStatus(bad pid) = %v", err)
		}
		_, err = c.Exec(ctx, ExecRequest{Path: "/nonexistent/program"})
		if !errors.As(err, &ge) {
			t.Errorf("Exec(missing program) = %v", err)
		}
		t.Logf("missing program: %v", err)
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("concurrent callers", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if err := c.Ping(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})
	t.Run("explicit resync", func(t *testing.T) {
		for range 3 {
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
