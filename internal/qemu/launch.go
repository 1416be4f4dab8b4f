package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
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

// Process is a QEMU that this hvd started: it is hvd's child, so hvd learns
// how it ended. (A QEMU found again after a restart of hvd is not; the log's
// last lines are all that tells how it ended.)
type Process struct {
	Pid   int
	done  chan struct{}
	state *os.ProcessState
}

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitStatus describes how the process ended, as " (killed by signal 6,
// aborted)" or " (exit status 1)"; "" for a clean exit or before Done.
func (p *Process) ExitStatus() string {
	select {
	case <-p.done:
	default:
		return ""
	}
	ws, ok := p.state.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return ""
	case ws.Signaled():
		return fmt.Sprintf(" (killed by signal %d, %s)", int(ws.Signal()), ws.Signal())
	case ws.Exited() && ws.ExitStatus() != 0:
		return fmt.Sprintf(" (exit status %d)", ws.ExitStatus())
	}
	return ""
}

// Launch starts QEMU with args (from Args) in its own session, and returns
// once ready reports that QEMU has initialised (hvd passes a QMP dial and a
// query-status: the monitor's thread greets early, but commands run in QEMU's
// main loop). QEMU is not daemonized: its stdout and stderr
// stay on logPath, a file opened for appending, for the whole life of the
// process, so what it says when it dies later is kept (it outlives hvd, and
// the file with it). extraFiles are inherited as fd 3, 4, ... (for
// Spec.IncomingFD). ctx bounds the wait; when it ends first, or ready fails
// for good, QEMU is killed.
//
// When QEMU fails, the error quotes the last lines it wrote, which name the
// problem (a missing file, a bad option); the full log stays in logPath.
func Launch(ctx context.Context, bin string, args []string, logPath string, extraFiles []*os.File, ready func(context.Context) error) (*Process, error) {
	if contains(args, "-daemonize") {
		return nil, fmt.Errorf("%w: qemu arguments hold -daemonize, which would send QEMU's messages to /dev/null; build them with qemu.Args", errdefs.ErrInvalid)
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("%w: qemu log: cannot open %q: %v; check that the VM's directory exists and is writable",
			errdefs.ErrUnavailable, logPath, err)
	}
	defer log.Close()
	start, _ := log.Seek(0, io.SeekEnd)
	fmt.Fprintf(log, "%s%s starting %s %s\n", logHeader, time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log // *os.File: QEMU gets the descriptor itself, no copying goroutine
	cmd.ExtraFiles = extraFiles
	cmd.Dir = "/" // hold no directory of hvd's busy, as a daemon would not
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: cannot run %s: %v; install Debian's qemu-system-x86", errdefs.ErrUnavailable, bin, err)
	}
	p := &Process{Pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	fail := func(kind error, format string, a ...any) (*Process, error) {
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("%w: "+format, append([]any{kind}, a...)...)
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		rerr := ready(rctx)
		cancel()
		if rerr == nil {
			return p, nil
		}
		select {
		case <-p.done:
			tail := quoteLog(logPath, start)
			return nil, fmt.Errorf("%w: qemu failed to start%s; %sfix the problem QEMU reports and retry (full log: %s)",
				failureKind(tail), p.ExitStatus(), tail, logPath)
		case <-ctx.Done():
			kind, what := errdefs.ErrTimeout, "did not finish starting in time"
			if errors.Is(ctx.Err(), context.Canceled) {
				kind, what = errdefs.ErrCanceled, "start was canceled"
			}
			return fail(kind, "qemu %s (last try: %v); %s(full log: %s)", what, rerr, quoteLog(logPath, start), logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logHeader starts the line hv writes into the log before each start of QEMU.
const logHeader = "hv: "

// LastWords quotes the last lines QEMU wrote to logPath since its latest
// start, as `QEMU said: "..."; ` (empty when it wrote nothing): why a QEMU
// that died on its own died.
func LastWords(logPath string) string {
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	from := max(0, end-tailBytes)
	b, err := io.ReadAll(io.NewSectionReader(f, from, end-from))
	if err != nil {
		return ""
	}
	if i := bytes.LastIndex(b, []byte("\n"+logHeader)); i >= 0 {
		from += int64(i) + 1
	} else if !bytes.HasPrefix(b, []byte(logHeader)) {
		from = max(0, end-tailBytes) // the header scrolled out of the window
	}
	return quoteLog(logPath, from)
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
		if l != "" && !strings.HasPrefix(l, logHeader) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	lines = lines[max(0, len(lines)-tailLines):]
	return fmt.Sprintf("QEMU said: %q; ", strings.Join(lines, " | "))
}

func contains(args []string, s string) bool {
	for _, a := range args {
		if a == s {
			return true
		}
	}
	return false
}
