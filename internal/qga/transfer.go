package qga

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// transferChunk is how much one call of ReadFile or WriteFile moves. The
// agent builds each answer whole in memory as base64 JSON (1 MiB is 1.4 MiB
// on the wire, and the client buffers it whole), and other callers (pings, status polls)
// wait for the stream while a chunk is in flight, as does a cancellation;
// on a slow virtio-serial link 1 MiB keeps that wait short while the
// per-call round trip stays a small part of the time.
const transferChunk = 1 << 20

// cleanupTimeout bounds closing a handle after the caller's ctx ended.
const cleanupTimeout = 10 * time.Second

// ReadFile copies the guest file path to w and returns the bytes copied.
// progress, if not nil, is called after each chunk with the bytes done and
// the size found by seeking to the end at the start (-1 when the file has
// none, as /proc files, or grew past it). The handle is closed in all cases,
// with up to 10s of extra time when ctx ended.
func (c *Client) ReadFile(ctx context.Context, path string, w io.Writer, progress func(done, total int64)) (n int64, err error) {
	h, err := c.FileOpen(ctx, path, "r")
	if err != nil {
		return 0, err
	}
	defer func() { err = also(err, c.closeAfter(ctx, h, path)) }()

	total := int64(-1)
	if end, _, err := c.FileSeek(ctx, h, 0, 2); err == nil {
		if _, _, err := c.FileSeek(ctx, h, 0, 0); err != nil {
			return 0, fmt.Errorf("reading %s in the guest: %w", path, err)
		}
		if end > 0 {
			total = end
		}
	} else if expired(ctx) {
		return 0, fmt.Errorf("reading %s in the guest: %w", path, err)
	} // else: not seekable (a pipe, a device); read it without a size.

	for {
		data, eof, err := c.FileRead(ctx, h, transferChunk)
		if err != nil {
			return n, fmt.Errorf("reading %s in the guest after %d bytes: %w", path, n, err)
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				return n, fmt.Errorf("copying %s from the guest: writing to the destination after %d bytes: %w: %w", path, n, errdefs.ErrUnavailable, err)
			}
			n += int64(len(data))
			if total >= 0 && n > total {
				total = -1
			}
			if progress != nil {
				progress(n, total)
			}
		}
		if eof || len(data) == 0 {
			return n, nil
		}
	}
}

// FileSize opens path in the guest, seeks to its end and closes it again,
// and returns that position: the size, or 0 for files that cannot tell
// (/proc, /sys). The handle is closed in all cases, with up to 10s of extra
// time when ctx ended.
func (c *Client) FileSize(ctx context.Context, path string) (size int64, err error) {
	h, err := c.FileOpen(ctx, path, "r")
	if err != nil {
		return 0, err
	}
	defer func() { err = also(err, c.closeAfter(ctx, h, path)) }()
	size, _, err = c.FileSeek(ctx, h, 0, 2)
	if err != nil {
		return 0, fmt.Errorf("finding the size of %s in the guest: %w", path, err)
	}
	return size, nil
}

// WriteFile creates or truncates the guest file path and fills it with size
// bytes from r (size < 0: until r ends; progress then gets total -1).
//
// The agent cannot rename files, so there is no write-then-rename: the data
// goes straight to path. If the copy fails or ctx ends, WriteFile truncates
// path to zero bytes, so that a partial copy is never taken for a whole one;
// the error says whether that worked. A reader with fewer than size bytes is
// such a failure. The handle is closed in all cases, with up to 10s of extra
// time when ctx ended. Close flushes to the guest kernel, not to its disk.
// The agent cannot set permissions: a new file gets its default mode (0666
// less the agent's umask), an existing one keeps its own.
func (c *Client) WriteFile(ctx context.Context, path string, r io.Reader, size int64, progress func(done, total int64)) (n int64, err error) {
	h, err := c.FileOpen(ctx, path, "w")
	if err != nil {
		return 0, err
	}
	n, err = c.writeAll(ctx, h, path, r, size, progress)
	if err == nil {
		if err = c.FileClose(ctx, h); err == nil {
			return n, nil
		}
		err = fmt.Errorf("writing %s in the guest: closing it: %w", path, err)
	} else {
		err = also(err, c.closeAfter(ctx, h, path))
	}
	return n, fmt.Errorf("%w; %s", err, c.discard(ctx, path))
}

func (c *Client) writeAll(ctx context.Context, h int64, path string, r io.Reader, size int64, progress func(done, total int64)) (n int64, err error) {
	total := max(size, -1)
	if size >= 0 {
		r = io.LimitReader(r, size)
	}
	buf := make([]byte, transferChunk)
	if size >= 0 && size < transferChunk {
		buf = make([]byte, size+1) // +1: a 0-byte buffer would never see EOF
	}
	for {
		k, rerr := io.ReadFull(r, buf)
		if k > 0 {
			w, err := c.FileWrite(ctx, h, buf[:k])
			n += int64(w)
			if err != nil {
				return n, fmt.Errorf("writing %s in the guest after %d bytes: %w", path, n, err)
			}
			if progress != nil {
				progress(n, total)
			}
		}
		switch {
		case rerr == nil:
			continue
		case rerr != io.EOF && rerr != io.ErrUnexpectedEOF:
			return n, fmt.Errorf("copying to %s in the guest: reading the source after %d bytes: %w: %w", path, n, errdefs.ErrUnavailable, rerr)
		case size >= 0 && n < size:
			return n, fmt.Errorf("copying to %s in the guest: the source ended after %d of %d bytes: %w", path, n, size, errdefs.ErrInvalid)
		}
		return n, nil
	}
}

// closeAfter closes h, with a fresh bounded ctx when the caller's ended.
func (c *Client) closeAfter(ctx context.Context, h int64, path string) error {
	if expired(ctx) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		ctx = cctx
	}
	if err := c.FileClose(ctx, h); err != nil {
		return fmt.Errorf("closing %s in the guest: %w", path, err)
	}
	return nil
}

// discard truncates a partly written file by reopening it with "w", and
// says what became of it.
func (c *Client) discard(ctx context.Context, path string) string {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	h, err := c.FileOpen(cctx, path, "w")
	if err == nil {
		err = c.FileClose(cctx, h)
	}
	if err != nil {
		return fmt.Sprintf("%s in the guest may hold a partial copy; delete it or copy again (truncating it failed: %v)", path, err)
	}
	return fmt.Sprintf("%s in the guest was truncated to 0 bytes rather than left partial; copy again", path)
}

// also adds a second error (a failed cleanup) to err without losing either.
func also(err, more error) error {
	switch {
	case more == nil:
		return err
	case err == nil:
		return more
	}
	return fmt.Errorf("%w; also %w", err, more)
}
