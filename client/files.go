package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hvproject/hv/api"
)

// checksumTrailer carries the hex SHA-256 of a downloaded file, sent after its bytes.
// sizeHeader announces the file's size when the answer is chunked: a trailer needs a
// chunked body, which has no Content-Length.
const (
	checksumTrailer = "X-Hv-Sha256"
	sizeHeader      = "X-Hv-Size"
)

// TransferError is a file copy that did not complete intact: cut short, or with data
// whose checksum differs from the sender's. Nothing of what was received can be trusted.
type TransferError struct {
	VM, Path string
	Done     int64 // bytes moved
	Total    int64 // bytes expected; -1 when unknown
	Reason   string
	Err      error // the cause, when there is one
}

func (e *TransferError) Error() string {
	msg := fmt.Sprintf("copy of %s:%s failed: %s", e.VM, e.Path, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TransferError) Unwrap() error { return e.Err }

// UploadFile writes size bytes read from r into the file guestPath of a VM (created, or
// replaced, with mode's permission bits), through the guest agent. The body streams with
// its Content-Length; only ctx bounds the transfer. progress, when not nil, is called as
// bytes go out (from another goroutine, never after UploadFile returns). hvd's answer
// carries the SHA-256 of what the guest file received, which is checked against what
// was sent.
func (c *Client) UploadFile(ctx context.Context, vm, guestPath string, mode os.FileMode, r io.Reader,
	size int64, progress func(done, total int64)) (api.FileInfo, error) {
	if size < 0 {
		return api.FileInfo{}, fmt.Errorf("upload %s:%s: size %d: give the number of bytes to send", vm, guestPath, size)
	}
	q := url.Values{"path": {guestPath}, "mode": {fmt.Sprintf("%04o", unixPerm(mode))}}
	req, err := c.newHTTPRequest(ctx, request{method: http.MethodPut, path: vmPath(vm, "/files"), query: q})
	if err != nil {
		return api.FileInfo{}, err
	}
	body := &uploadBody{r: r, size: size, sum: sha256.New(), progress: progress}
	req.ContentLength = size
	req.Body = http.NoBody
	if size > 0 {
		req.Body = body
		req.Header.Set("Expect", "100-continue")
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.roundTrip(req)
	sent, short := body.finish()
	if short != nil {
		return api.FileInfo{}, &TransferError{VM: vm, Path: guestPath, Done: sent, Total: size, Reason: "the source ended early", Err: short}
	}
	if err != nil {
		return api.FileInfo{}, err
	}
	defer resp.Body.Close()
	var info api.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return info, fmt.Errorf("PUT %s: decode answer: %w", req.URL.Path, err)
	}
	if want := hex.EncodeToString(body.sum.Sum(nil)); info.Size != size || !strings.EqualFold(info.SHA256, want) {
		return info, &TransferError{VM: vm, Path: guestPath, Done: info.Size, Total: size,
			Reason: fmt.Sprintf("the guest file has %d bytes with SHA-256 %s; %d bytes with SHA-256 %s were sent",
				info.Size, info.SHA256, size, want)}
	}
	return info, nil
}

// unixPerm turns an os.FileMode into the octal mode of chmod(2).
func unixPerm(m os.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// uploadBody feeds exactly size bytes of r to the transport, hashing and counting them.
// The transport reads it on its own goroutine, hence the lock; finish stops the progress
// calls for good.
type uploadBody struct {
	r        io.Reader
	size     int64
	sum      hash.Hash
	progress func(done, total int64)

	mu       sync.Mutex
	done     int64
	short    error
	finished bool
}

func (b *uploadBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return 0, errors.New("upload finished")
	}
	if left := b.size - b.done; int64(len(p)) > left {
		p = p[:left]
	}
	if len(p) == 0 {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	b.sum.Write(p[:n])
	b.done += int64(n)
	if n > 0 && b.progress != nil {
		b.progress(b.done, b.size)
	}
	if errors.Is(err, io.EOF) && b.done < b.size {
		b.short = fmt.Errorf("read %d of %d bytes", b.done, b.size)
		return n, io.ErrUnexpectedEOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.short = err
	}
	return n, err
}

func (b *uploadBody) Close() error { return nil } // r belongs to the caller

func (b *uploadBody) finish() (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	return b.done, b.short
}

// DownloadFile copies the file guestPath of a VM into w and returns its size and SHA-256.
// Only ctx bounds the transfer. progress, when not nil, is called as bytes arrive (total
// is -1 when hvd did not say: neither Content-Length nor X-Hv-Size). The SHA-256 that hvd
// sends after the bytes (the X-Hv-Sha256 trailer) is checked against what arrived: a
// transfer cut short, without that checksum, or whose checksum differs, is a
// *TransferError, and what was written to w must then be thrown away.
func (c *Client) DownloadFile(ctx context.Context, vm, guestPath string, w io.Writer,
	progress func(done, total int64)) (api.FileInfo, error) {
	q := url.Values{"path": {guestPath}}
	resp, err := c.send(ctx, request{method: http.MethodGet, path: vmPath(vm, "/files"), query: q})
	if err != nil {
		return api.FileInfo{}, err
	}
	defer resp.Body.Close()
	total := resp.ContentLength
	if n, perr := strconv.ParseInt(resp.Header.Get(sizeHeader), 10, 64); total < 0 && perr == nil && n >= 0 {
		total = n
	}
	fail := func(done int64, reason string, err error) (api.FileInfo, error) {
		return api.FileInfo{}, &TransferError{VM: vm, Path: guestPath, Done: done, Total: total, Reason: reason, Err: err}
	}
	sum := sha256.New()
	buf := make([]byte, 256<<10)
	var done int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return api.FileInfo{}, fmt.Errorf("copy of %s:%s: writing: %w", vm, guestPath, werr)
			}
			sum.Write(buf[:n])
			done += int64(n)
			if progress != nil {
				progress(done, total)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			if cerr := ctx.Err(); cerr != nil {
				return api.FileInfo{}, cerr
			}
			return fail(done, fmt.Sprintf("the transfer broke off after %d of %s bytes", done, sizeText(total)), rerr)
		}
	}
	if total >= 0 && done != total {
		return fail(done, fmt.Sprintf("received %d of %d bytes", done, total), nil)
	}
	got := hex.EncodeToString(sum.Sum(nil))
	want := resp.Trailer.Get(checksumTrailer)
	if want == "" {
		return fail(done, "hvd sent no "+checksumTrailer+" checksum, so the copy cannot be verified", nil)
	}
	if !strings.EqualFold(want, got) {
		return fail(done, fmt.Sprintf("checksum mismatch: received data has SHA-256 %s, hvd sent %s", got, want), nil)
	}
	return api.FileInfo{Path: guestPath, Size: done, SHA256: got}, nil
}

func sizeText(n int64) string {
	if n < 0 {
		return "an unknown number of"
	}
	return fmt.Sprint(n)
}
