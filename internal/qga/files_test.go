package qga

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestFileCommandsJSON(t *testing.T) {
	s := newScript().
		on("guest-file-open", `{"return": 1000}`).
		on("guest-file-write", `{"return": {"count": 3, "eof": false}}`).
		on("guest-file-seek", `{"return": {"position": 1, "eof": false}}`).
		on("guest-file-read", `{"return": {"count": 2, "buf-b64": "AP8=", "eof": true}}`).
		on("guest-file-flush", `{"return": {}}`).
		on("guest-file-close", `{"return": {}}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)

	h, err := c.FileOpen(ctx, "/tmp/x", "r+")
	if err != nil || h != 1000 {
		t.Fatalf("FileOpen = %d, %v", h, err)
	}
	if n, err := c.FileWrite(ctx, h, []byte{'a', 0, 0xff}); err != nil || n != 3 {
		t.Fatalf("FileWrite = %d, %v", n, err)
	}
	if pos, eof, err := c.FileSeek(ctx, h, 1, 0); err != nil || pos != 1 || eof {
		t.Fatalf("FileSeek = %d, %v, %v", pos, eof, err)
	}
	if b, eof, err := c.FileRead(ctx, h, 4096); err != nil || !bytes.Equal(b, []byte{0, 0xff}) || !eof {
		t.Fatalf("FileRead = %q, %v, %v", b, eof, err)
	}
	if err := c.FileFlush(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := c.FileClose(ctx, h); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"execute":"guest-file-open","arguments":{"path":"/tmp/x","mode":"r+"}}`,
		`{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":"YQD/"}}`,
		`{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":1,"whence":0}}`,
		`{"execute":"guest-file-read","arguments":{"handle":1000,"count":4096}}`,
		`{"execute":"guest-file-flush","arguments":{"handle":1000}}`,
		`{"execute":"guest-file-close","arguments":{"handle":1000}}`,
	}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestFileAnswersChecked(t *testing.T) {
	s := newScript().
		on("guest-file-read", `{"return": {"count": 5, "buf-b64": "AP8=", "eof": false}}`).
		on("guest-file-write", `{"return": {"count": 1, "eof": false}}`).
		on("guest-file-close", `{"error": {"class": "GenericError", "desc": "handle '7' has not been found"}}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)
	if _, _, err := c.FileRead(ctx, 7, 10); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "garbage") {
		t.Errorf("FileRead with a wrong count = %v", err)
	}
	if n, err := c.FileWrite(ctx, 7, []byte("abc")); n != 1 || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("short FileWrite = %d, %v", n, err)
	}
	err := c.FileClose(ctx, 7)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "agent restarted") {
		t.Errorf("FileClose(stale) = %v", err)
	}
	if _, err := c.FileWrite(ctx, 7, make([]byte, maxChunk+1)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("FileWrite(too much) = %v", err)
	}
}

// A canceled transfer closes its handle, with a ctx of its own.
func TestReadFileCanceledCloses(t *testing.T) {
	chunk := base64.StdEncoding.EncodeToString(make([]byte, transferChunk))
	s := newScript().
		on("guest-file-open", `{"return": 1001}`).
		on("guest-file-seek", `{"return": {"position": 0, "eof": false}}`).
		on("guest-file-read", fmt.Sprintf(`{"return": {"count": %d, "buf-b64": %q, "eof": false}}`, transferChunk, chunk)).
		on("guest-file-close", `{"return": {}}`)
	c, _ := startAgent(t, s.handle)
	ctx, cancel := context.WithCancel(testCtx(t))
	var calls int
	n, err := c.ReadFile(ctx, "/dev/zero", &bytes.Buffer{}, func(done, total int64) {
		calls++
		if total != -1 || done != int64(calls)*transferChunk {
			t.Errorf("progress(%d, %d)", done, total)
		}
		if calls == 3 {
			cancel()
		}
	})
	if !errors.Is(err, errdefs.ErrCanceled) || n != 3*transferChunk {
		t.Fatalf("ReadFile = %d, %v", n, err)
	}
	got := s.sent()
	if last := got[len(got)-1]; last != `{"execute":"guest-file-close","arguments":{"handle":1001}}` {
		t.Errorf("last request %s", last)
	}
}

// A failed write leaves an empty file, not a partial one.
func TestWriteFileFailureTruncates(t *testing.T) {
	s := newScript().
		on("guest-file-open", `{"return": 1002}`).
		on("guest-file-write", `{"error": {"class": "GenericError", "desc": "failed to write to file: No space left on device"}}`).
		on("guest-file-close", `{"return": {}}`)
	c, _ := startAgent(t, s.handle)
	_, err := c.WriteFile(testCtx(t), "/big", strings.NewReader("data"), 4, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "No space left") || !strings.Contains(err.Error(), "truncated to 0 bytes") {
		t.Fatalf("WriteFile = %v", err)
	}
	want := []string{
		`{"execute":"guest-file-open","arguments":{"path":"/big","mode":"w"}}`,
		`{"execute":"guest-file-write","arguments":{"handle":1002,"buf-b64":"ZGF0YQ=="}}`,
		`{"execute":"guest-file-close","arguments":{"handle":1002}}`,
		`{"execute":"guest-file-open","arguments":{"path":"/big","mode":"w"}}`,
		`{"execute":"guest-file-close","arguments":{"handle":1002}}`,
	}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
