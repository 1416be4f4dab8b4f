package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Log quoting: enough of QEMU's last words to name the problem, not a wall.
const (
	tailLines = 5
	tailBytes = 64 << 10
)

// Launch starts QEMU with args (from Args, so with -daemonize and -pidfile)
// and returns the daemon's pid once QEMU has initialised. The process QEMU
// forks lives in its own session and outlives the caller. QEMU's output goes to
// logPath, a file, so nothing can block on a pipe. extraFiles are inherited as
// fd 3, 4, ... (for Spec.IncomingFD). ctx bounds the wait for initialisation;
// when it ends first, whatever was started is killed.
//
// When QEMU fails, the error quotes the last lines it wrote, which name the
// problem (a missing file, a bad option); the full log stays in logPath.
func Launch(ctx context.Context, bin string, args []string, logPath string, extraFiles []*os.File) (pid int, err error) {
	pidFile := argValue(args, "-pidfile")
	if pidFile == "" || !contains(args, "-daemonize") {
		return 0, fmt.Errorf("%w: qemu arguments lack -daemonize or -pidfile; build them with qemu.Args", errdefs.ErrInvalid)
	}
	uuid := argValue(args, "-uuid")
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return 0, fmt.Errorf("%w: qemu log: cannot open %q: %v; check that the VM's directory exists and is writable",
			errdefs.ErrUnavailable, logPath, err)
	}
	defer log.Close()
	start, _ := log.Seek(0, io.SeekEnd)
	fmt.Fprintf(log, "hv: %s starting %s %s\n", time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = extraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%w: cannot run %s: %v; install Debian's qemu-system-x86", errdefs.ErrUnavailable, bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	select {
	case err = <-done:
	case <-ctx.Done():
		// The foreground process and its first fork share its process group;
		// the daemon has its own session and is found through the pid file.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		killDaemon(pidFile, uuid)
		kind, what := errdefs.ErrTimeout, "did not finish starting in time"
		if errors.Is(ctx.Err(), context.Canceled) {
			kind, what = errdefs.ErrCanceled, "start was canceled"
		}
		return 0, fmt.Errorf("%w: qemu %s; %s(full log: %s)", kind, what, quoteLog(logPath, start), logPath)
	}
	if err != nil {
		tail := quoteLog(logPath, start)
		return 0, fmt.Errorf("%w: qemu failed to start: %v; %sfix the problem QEMU reports and retry (full log: %s)",
			failureKind(tail), err, tail, logPath)
	}
	pid, err = readPIDFile(pidFile)
	if err != nil {
		return 0, err
	}
	if uuid != "" && !Alive(pid, uuid) {
		return 0, fmt.Errorf("%w: qemu started but process %d exited at once; %scheck the log %s",
			errdefs.ErrUnavailable, pid, quoteLog(logPath, start), logPath)
	}
	return pid, nil
}

// failureKind tells a bad configuration (ErrInvalid: the user can fix it) from
// anything else (ErrUnavailable).
func failureKind(tail string) error {
	for _, s := range []string{"No such file", "Could not open", "Parameter", "invalid", "not found"} {
		if strings.Contains(tail, s) {
			return errdefs.ErrInvalid
		}
	}
	return errdefs.ErrUnavailable
}

func killDaemon(pidFile, uuid string) {
	if pid, err := readPIDFile(pidFile); err == nil && uuid != "" {
		Kill(pid, uuid)
	}
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%w: qemu started but its pid file %q cannot be read: %v; check the VM's directory",
			errdefs.ErrUnavailable, path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%w: qemu pid file %q holds %q, not a pid; check the VM's directory",
			errdefs.ErrUnavailable, path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// quoteLog returns the last lines QEMU wrote to the log after offset start,
// as `QEMU said: "..."; ` (empty when it wrote nothing).
func quoteLog(path string, start int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if end, err := f.Seek(0, io.SeekEnd); err == nil && end-start > tailBytes {
		start = end - tailBytes
	}
	b, err := io.ReadAll(io.NewSectionReader(f, start, tailBytes))
	if err != nil {
		return ""
	}
	// Drop hv's own header line and QEMU's timestamps: the user wants the words.
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT[\d:.]+Z `)
	var lines []string
	for l := range strings.Lines(string(b)) {
		l = strings.TrimSpace(stamp.ReplaceAllString(l, ""))
		if l != "" && !strings.HasPrefix(l, "hv: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	lines = lines[max(0, len(lines)-tailLines):]
	return fmt.Sprintf("QEMU said: %q; ", strings.Join(lines, " | "))
}

func argValue(args []string, name string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}

func contains(args []string, s string) bool {
	for _, a := range args {
		if a == s {
			return true
		}
	}
	return false
}
