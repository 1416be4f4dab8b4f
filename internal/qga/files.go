package qga

import (
	"context"
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

// maxChunk bounds one FileRead or FileWrite. The data travels base64 inside a
// single JSON line (4/3 bigger), and the client buffers each answer whole;
// the agent itself allows 48 MiB reads.
const maxChunk = 16 << 20

// FileOpen opens path in the guest with an fopen(3) mode ("r", "w", "a",
// "r+", ...; "" means "r") and returns the agent's handle for it. Handles
// live in the agent: close them with FileClose, and expect ErrNotFound for
// them once the agent restarted.
func (c *Client) FileOpen(ctx context.Context, path, mode string) (handle int64, err error) {
	args := struct {
		Path string `json:"path"`
		Mode string `json:"mode,omitempty"`
	}{path, mode}
	if err := c.do(ctx, "guest-file-open", args, &handle); err != nil {
		return 0, fmt.Errorf("opening %s in the guest: %w", path, err)
	}
	return handle, nil
}

type handleArgs struct {
	Handle int64 `json:"handle"`
}

// FileRead reads up to count bytes (1 to 16 MiB) at the handle's position.
// eof reports that the end of the file was reached.
func (c *Client) FileRead(ctx context.Context, h int64, count int) (data []byte, eof bool, err error) {
	if count < 1 || count > maxChunk {
		return nil, false, fmt.Errorf("guest agent guest-file-read: count %d: want 1 to %d bytes per read: %w", count, maxChunk, errdefs.ErrInvalid)
	}
	// Always pass count: the agent's default is only 4 KiB.
	args := struct {
		Handle int64 `json:"handle"`
		Count  int   `json:"count"`
	}{h, count}
	var ret struct {
		Count int    `json:"count"`
		Buf   []byte `json:"buf-b64"` // base64, decoded by encoding/json
		EOF   bool   `json:"eof"`
	}
	// The answer may be no bigger than count bytes need.
	err = c.send(ctx, request{command: "guest-file-read", args: args, result: &ret, limit: fileReadAnswer(count)})
	if err = c.explain(err); err != nil {
		return nil, false, err
	}
	if ret.Count != len(ret.Buf) || len(ret.Buf) > count {
		return nil, false, fmt.Errorf("guest agent guest-file-read: answer says %d bytes but holds %d (asked for %d): %w", ret.Count, len(ret.Buf), count, errGarbage)
	}
	return ret.Buf, ret.EOF, nil
}

// FileWrite writes data (at most 16 MiB) at the handle's position. Like
// io.Writer it returns an error whenever it wrote less than len(data).
func (c *Client) FileWrite(ctx context.Context, h int64, data []byte) (int, error) {
	if len(data) > maxChunk {
		return 0, fmt.Errorf("guest agent guest-file-write: %d bytes: write at most %d per call (WriteFile splits for you): %w", len(data), maxChunk, errdefs.ErrInvalid)
	}
	args := struct {
		Handle int64  `json:"handle"`
		Buf    []byte `json:"buf-b64"`
	}{h, data}
	if args.Buf == nil {
		args.Buf = []byte{} // "" rather than null, which the agent rejects
	}
	var ret struct {
		Count int `json:"count"`
	}
	if err := c.do(ctx, "guest-file-write", args, &ret); err != nil {
		return 0, err
	}
	if ret.Count != len(data) {
		return ret.Count, fmt.Errorf("guest agent guest-file-write: wrote %d of %d bytes: %w", ret.Count, len(data), errdefs.ErrUnavailable)
	}
	return ret.Count, nil
}

// FileSeek moves the handle's position as fseek(3) does, whence being 0
// (from the start), 1 (from the current position) or 2 (from the end), and
// returns the new position. FileSeek(ctx, h, 0, 1) only reports it.
func (c *Client) FileSeek(ctx context.Context, h int64, offset int64, whence int) (pos int64, eof bool, err error) {
	if whence < 0 || whence > 2 {
		return 0, false, fmt.Errorf("guest agent guest-file-seek: whence %d: want 0 (start), 1 (current) or 2 (end): %w", whence, errdefs.ErrInvalid)
	}
	// The agent defines 0/1/2 itself (not the guest's SEEK_*), so they are
	// portable; the names "set"/"cur"/"end" need QEMU 2.6.
	args := struct {
		Handle int64 `json:"handle"`
		Offset int64 `json:"offset"`
		Whence int   `json:"whence"`
	}{h, offset, whence}
	var ret struct {
		Position int64 `json:"position"`
		EOF      bool  `json:"eof"`
	}
	if err := c.do(ctx, "guest-file-seek", args, &ret); err != nil {
		return 0, false, err
	}
	return ret.Position, ret.EOF, nil
}

// FileFlush pushes the agent's stdio buffer for the handle to the guest
// kernel (fflush, not fsync).
func (c *Client) FileFlush(ctx context.Context, h int64) error {
	return c.do(ctx, "guest-file-flush", handleArgs{h}, nil)
}

// FileClose closes the handle; closing flushes, so it can fail like a write.
func (c *Client) FileClose(ctx context.Context, h int64) error {
	return c.do(ctx, "guest-file-close", handleArgs{h}, nil)
}
