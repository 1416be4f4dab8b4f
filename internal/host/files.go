package host

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

func guestPath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("path: %q; give an absolute path in the guest, e.g. /tmp/file: %w", p, errdefs.ErrInvalid)
	}
	if path.Clean(p) == "/" {
		return "", fmt.Errorf("path: %q is a directory; give a file path: %w", p, errdefs.ErrInvalid)
	}
	return path.Clean(p), nil
}

// WriteGuestFile copies r (size bytes) into a file of the guest through the agent
// (Hyper-V's guest services): no guest network needed.
func (s *Service) WriteGuestFile(ctx context.Context, name, p string, mode int, r io.Reader, size int64) (api.FileInfo, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FileInfo{}, err
	}
	p, err = guestPath(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	ss, err := v.serviceSession(api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	h := sha256.New()
	var n int64
	err = ss.agentCall(ctx, func(c *qga.Client) error {
		var err error
		n, err = c.WriteFile(ctx, p, io.TeeReader(r, h), size, nil)
		return err
	})
	if err != nil {
		return api.FileInfo{}, errWrap(err, "copying into %s in VM %s", p, name)
	}
	if n != size {
		return api.FileInfo{}, fmt.Errorf("copying into %s in VM %s: %d of %d bytes arrived; the upload was cut short: %w", p, name, n, size, errdefs.ErrUnavailable)
	}
	if err := chmodGuest(ctx, ss, p, mode); err != nil {
		return api.FileInfo{}, err
	}
	return api.FileInfo{Path: p, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// chmodGuest sets a file's mode with the guest's chmod: qemu-ga creates files
// with its own umask (0666 is common) and has no chmod of its own.
func chmodGuest(ctx context.Context, ss *session, p string, mode int) error {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	var st qga.ExecStatus
	err := ss.agentCall(ctx, func(c *qga.Client) error {
		var err error
		st, err = c.Run(ctx, qga.ExecRequest{Path: "chmod", Args: []string{strconv.FormatInt(int64(mode), 8), p}})
		return err
	})
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case st.ExitCode != 0 || st.Signal != 0:
		why = fmt.Sprintf("exit status %d: %s", st.ExitCode, guestStderr(st.Stderr))
	default:
		return nil
	}
	return fmt.Errorf("file copied, but setting mode %o on %s failed (%s); set it with: hv vm exec VM -- chmod %o %s: %w", mode, p, why, mode, p, errdefs.ErrUnavailable)
}

// guestStderr is a guest command's stderr as an error may quote it: one line
// of at most 200 bytes without control characters (the guest wrote it).
func guestStderr(b []byte) string {
	return textsafe.Line(strings.TrimSpace(string(b)), 200)
}

// ReadGuestFile copies a file of the guest to w. sized is called with the file's
// size (-1 when the guest cannot tell, as for /proc files) before the first byte
// is written, so a caller can announce it.
func (s *Service) ReadGuestFile(ctx context.Context, name, p string, w io.Writer, sized func(int64)) (api.FileInfo, error) {
	v, err := s.get(name)
	if err != nil {
		return api.FileInfo{}, err
	}
	p, err = guestPath(p)
	if err != nil {
		return api.FileInfo{}, err
	}
	ss, err := v.serviceSession(api.ServiceGuestServices)
	if err != nil {
		return api.FileInfo{}, err
	}
	var size int64 = -1
	err = ss.agentCall(ctx, func(c *qga.Client) error {
		var err error
		size, err = c.FileSize(ctx, p)
		return err
	})
	if err != nil {
		return api.FileInfo{}, errWrap(err, "opening %s in VM %s", p, name)
	}
	// Files of /proc and /sys say they are empty; their size is known at the end.
	known := size > 0
	if !known {
		size = -1
	}
	sized(size)
	hsum := sha256.New()
	var n int64
	err = ss.agentCall(ctx, func(c *qga.Client) error {
		var err error
		n, err = c.ReadFile(ctx, p, io.MultiWriter(w, hsum), nil)
		return err
	})
	if err != nil {
		return api.FileInfo{}, errWrap(err, "copying %s out of VM %s", p, name)
	}
	if known && n != size {
		return api.FileInfo{}, fmt.Errorf("%s in VM %s changed size while it was copied (%d, now %d bytes); copy it again: %w", p, name, size, n, errdefs.ErrConflict)
	}
	return api.FileInfo{Path: p, Size: n, SHA256: hex.EncodeToString(hsum.Sum(nil))}, nil
}
