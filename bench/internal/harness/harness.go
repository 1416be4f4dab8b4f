// Package harness is what every benchmark runs with: its inputs (Env), the undo
// steps of what it started (Cleanup), progress logging, and small helpers for
// the processes and files it handles.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/results"
)

// Env is what every benchmark gets: the inputs and the host's description.
type Env struct {
	Guest          string // directory of the tiny test guest
	Bin            string // directory of hv and hvd
	Runs           int
	QEMU           string // qemu-system-x86_64
	Host           results.Host
	Cleanup        *Cleanup
	Verbose        bool
	Poll           time.Duration // how often the VM is asked for its heartbeat
	HeartbeatEvery string        // hvd's --heartbeat-interval in the boot benchmark
}

// Cleanup holds the undo steps of everything started, run last-in first-out.
type Cleanup struct{ fns []func() }

// Add registers fn to run at Run, before the steps added earlier.
func (c *Cleanup) Add(fn func()) { c.fns = append(c.fns, fn) }

// Run runs the steps, last added first, and forgets them.
func (c *Cleanup) Run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// Logf prints progress to stderr, so stdout holds only the tables.
func Logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

// Sleep waits d, or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// FindQEMU is the path of qemu-system-x86_64.
func FindQEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 not found; install Debian's qemu-system-x86 (make deps)")
	}
	return p, nil
}

// CopyFile copies src to a new file dst.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Tail is the end of a log file, for error messages.
func Tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return fmt.Sprintf("last lines of %s:\n%s", path, b)
}

// PidsMentioning lists the processes whose command line contains s.
func PidsMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// RSS is the resident set size of a process in bytes (VmRSS of /proc/PID/status).
func RSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc/%d/status", pid, pid)
}

// Settle writes back what earlier runs left dirty in the host's page cache (sync(2)),
// outside the timing, so that a run does not pay for the one before it.
func Settle() { syscall.Sync() }
