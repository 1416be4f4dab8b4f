package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qga"
	"github.com/hvproject/hv/internal/textsafe"
)

// Path checks a path in the guest: absolute, and a file (not "/").
func Path(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("path: %q; give an absolute path in the guest, e.g. /tmp/file: %w", p, errdefs.ErrInvalid)
	}
	if path.Clean(p) == "/" {
		return "", fmt.Errorf("path: %q is a directory; give a file path: %w", p, errdefs.ErrInvalid)
	}
	return path.Clean(p), nil
}

// WriteFile copies r (size bytes) into the guest's file p through the agent
// (Hyper-V's guest services, no guest network) and sets its mode.
func (g *Guest) WriteFile(ctx context.Context, p string, mode int, r io.Reader, size int64) (api.FileInfo, error) {
	h := sha256.New()
	var n int64
	err := g.Call(ctx, func(c *qga.Client) error {
		var err error
		n, err = c.WriteFile(ctx, p, io.TeeReader(r, h), size, nil)
		return err
	})
	if err != nil {
		return api.FileInfo{}, fmt.Errorf("copying into %s: %w", p, err)
	}
	if n != size {
		return api.FileInfo{}, fmt.Errorf("copying into %s: %d of %d bytes arrived; the upload was cut short: %w", p, n, size, errdefs.ErrUnavailable)
	}
	if err := g.chmod(ctx, p, mode); err != nil {
		return api.FileInfo{}, err
	}
	return api.FileInfo{Path: p, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// chmod sets a file's mode with the guest's chmod: qemu-ga creates files with
// its own umask (0666 is common) and has no chmod of its own.
func (g *Guest) chmod(ctx context.Context, p string, mode int) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	var st qga.ExecStatus
	err := g.Call(ctx, func(c *qga.Client) error {
		var err error
		st, err = c.Run(ctx, qga.ExecRequest{Path: "chmod", Args: []string{strconv.FormatInt(int64(mode), 8), p}})
		return err
	})
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case st.ExitCode != 0 || st.Signal != 0:
		why = fmt.Sprintf("exit status %d: %s", st.ExitCode, Stderr(st.Stderr))
	default:
		return nil
	}
	return errdefs.WithHint(fmt.Errorf("file copied, but setting mode %o on %s failed (%s): %w", mode, p, why, errdefs.ErrUnavailable),
		fmt.Sprintf("run chmod %o %s in the guest (exec)", mode, p))
}

// Stderr is a guest command's stderr as an error may quote it: one line of at
// most 200 bytes without control characters (the guest wrote it).
func Stderr(b []byte) string {
	return textsafe.Line(strings.TrimSpace(string(b)), 200)
}

// ReadFile copies the guest's file p to w. sized is called with the file's
// size (-1 when the guest cannot tell, as for /proc files) before the first
// byte is written, so a caller can announce it.
func (g *Guest) ReadFile(ctx context.Context, p string, w io.Writer, sized func(int64)) (api.FileInfo, error) {
	var size int64 = -1
	err := g.Call(ctx, func(c *qga.Client) error {
		var err error
		size, err = c.FileSize(ctx, p)
		return err
	})
	if err != nil {
		return api.FileInfo{}, fmt.Errorf("opening %s: %w", p, err)
	}
	// Files of /proc and /sys say they are empty; their size is known at the end.
	known := size > 0
	if !known {
		size = -1
	}
	sized(size)
	hsum := sha256.New()
	var n int64
	err = g.Call(ctx, func(c *qga.Client) error {
		var err error
		n, err = c.ReadFile(ctx, p, io.MultiWriter(w, hsum), nil)
		return err
	})
	if err != nil {
		return api.FileInfo{}, fmt.Errorf("copying %s out: %w", p, err)
	}
	if known && n != size {
		return api.FileInfo{}, fmt.Errorf("%s changed size while it was copied (%d, now %d bytes); copy it again: %w", p, size, n, errdefs.ErrConflict)
	}
	return api.FileInfo{Path: p, Size: n, SHA256: hex.EncodeToString(hsum.Sum(nil))}, nil
}
