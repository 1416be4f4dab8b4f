// Package disk wraps qemu-img: inspect, check, create, resize, convert and
// import disk images. Every call runs qemu-img under a context with a timeout,
// and every error names the file and says what to do.
package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// Timeouts for the short qemu-img calls. They only touch metadata, except
// check, which reads every table of a large image. Convert has none of its own:
// copying a big image takes as long as it takes, and the caller's ctx bounds it.
const (
	infoTimeout   = 30 * time.Second
	createTimeout = 2 * time.Minute
	checkTimeout  = 30 * time.Minute
	// waitDelay bounds the wait for output pipes after qemu-img is killed.
	waitDelay = 5 * time.Second
	// maxMessageLines of qemu-img's stderr go into an error.
	maxMessageLines = 5
)

// Tool runs one qemu-img binary.
type Tool struct {
	Bin string // path to qemu-img
}

// NewTool finds qemu-img in PATH.
func NewTool() (*Tool, error) {
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, fmt.Errorf("%w: qemu-img not found in PATH; install Debian's qemu-utils", errdefs.ErrNotFound)
	}
	return &Tool{Bin: bin}, nil
}

// run runs qemu-img with args and returns its stdout. On failure the error
// carries qemu-img's own message, which names the real problem.
func (t *Tool) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.Bin, args...)
	cmd.WaitDelay = waitDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if cerr := ctxErr(ctx, "qemu-img "+args[0]); cerr != nil {
		return nil, cerr
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return nil, fmt.Errorf("%w: cannot run %s: %v; check that qemu-utils is installed", errdefs.ErrUnavailable, t.Bin, err)
	}
	return stdout.Bytes(), &imgError{code: exit.ExitCode(), msg: qemuMessage(stderr.String())}
}

// imgError is a failed qemu-img run; callers turn it into a user-facing error.
type imgError struct {
	code int
	msg  string
}

func (e *imgError) Error() string { return e.msg }

// ctxErr maps a finished context to errdefs kinds, or returns nil.
func ctxErr(ctx context.Context, what string) error {
	switch ctx.Err() {
	case nil:
		return nil
	case context.DeadlineExceeded:
		return fmt.Errorf("%w: %s did not finish in time; retry, or check that the disk is not very slow or hung", errdefs.ErrTimeout, what)
	default:
		return fmt.Errorf("%w: %s was canceled", errdefs.ErrCanceled, what)
	}
}

// qemuMessage makes qemu-img's stderr fit in one error: no "qemu-img: "
// prefixes, lines joined.
func qemuMessage(stderr string) string {
	var lines []string
	for l := range strings.Lines(stderr) {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "qemu-img:"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return "qemu-img failed without a message"
	}
	// The first problem is usually the cause; long lists only bury it.
	if len(lines) > maxMessageLines {
		lines = append(lines[:maxMessageLines], "...")
	}
	return strings.Join(lines, "; ")
}

// wrapImg turns a qemu-img failure on path into an error of the right kind.
func wrapImg(err error, path, doing string) error {
	var ie *imgError
	if !errors.As(err, &ie) {
		return err
	}
	if isLockError(ie.msg) {
		return fmt.Errorf("%w: disk %q is in use (%s); stop the VM that uses it, then retry", errdefs.ErrConflict, path, ie.msg)
	}
	return fmt.Errorf("%w: disk %q: cannot %s: %s", errdefs.ErrInvalid, path, doing, ie.msg)
}

// isLockError spots QEMU's image-locking refusal: another process (a running VM)
// holds the image.
func isLockError(msg string) bool {
	return strings.Contains(msg, "Failed to get") && strings.Contains(msg, "lock")
}

// imgPath makes path absolute. qemu reads "proto:..." and "json:{...}" in a
// file name as a protocol, so a user's file name must never reach it bare.
func imgPath(field, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: %s: is empty; give the path of a disk image", errdefs.ErrInvalid, field)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %q: %v; use an absolute path", errdefs.ErrInvalid, field, path, err)
	}
	return abs, nil
}

// existing returns the absolute path of an existing regular file.
func existing(field, path string) (string, error) {
	abs, err := imgPath(field, path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: %s: %q does not exist; check the path", errdefs.ErrNotFound, field, path)
	case err != nil:
		return "", fmt.Errorf("%w: %s: cannot read %q: %v; check the path and its permissions", errdefs.ErrInvalid, field, path, err)
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%w: %s: %q is not a regular file; give the path of a disk image file", errdefs.ErrInvalid, field, path)
	}
	return abs, nil
}

// absent returns the absolute path of a file that must not exist yet.
func absent(field, path string) (string, error) {
	abs, err := imgPath(field, path)
	if err != nil {
		return "", err
	}
	if _, err := os.Lstat(abs); err == nil {
		return "", fmt.Errorf("%w: %s: %q exists already; choose another path or delete the file first", errdefs.ErrConflict, field, path)
	}
	return abs, nil
}
