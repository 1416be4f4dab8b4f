package qga

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// shortWaits makes every command of c give up after d, as if d were its
// bound, so that tests of silent agents end quickly.
func shortWaits(c *Client, d time.Duration) {
	c.limit = func(command string) limit {
		l := commandLimit(command)
		l.wait = d
		return l
	}
}

// returnsWithin runs f, which must return within d; a call that hangs fails
// the test (and is ended by the client's cleanup).
func returnsWithin(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		t.Logf("returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
		return err
	case <-time.After(d):
		t.Fatalf("still waiting after %v: the call has no deadline", d)
		return nil
	}
}

// A copy's guest-file-close runs with the caller's ctx, or one of its own
// when that ended; either way an agent that stops answering there must not
// hold the stream forever.
func TestSilentFileCloseTimesOut(t *testing.T) {
	var closes atomic.Int32
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-file-open":
			return `{"return": 7}` + "\n"
		case "guest-file-seek":
			return `{"return": {"position": 0, "eof": false}}` + "\n"
		case "guest-file-read":
			return `{"return": {"count": 3, "buf-b64": "YWJj", "eof": true}}` + "\n"
		case "guest-file-close":
			if closes.Add(1) == 1 {
				return "" // the agent hangs here
			}
		}
		return healthy(a, r)
	})
	shortWaits(c, 300*time.Millisecond)
	var out strings.Builder
	err := returnsWithin(t, 5*time.Second, func() error {
		_, err := c.ReadFile(context.Background(), "/x", &out, nil)
		return err
	})
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "did not answer guest-file-close within") {
		t.Fatalf("ReadFile = %v; want a timeout of guest-file-close", err)
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after the timeout: %v", err)
	}
}

// An agent that stops in the middle of a chunk's answer: the read gives up
// within its bound, the handle is still closed, and the stream is usable.
func TestSilentMidChunkTimesOut(t *testing.T) {
	var reads atomic.Int32
	var closed atomic.Bool
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-file-open":
			return `{"return": 8}` + "\n"
		case "guest-file-seek":
			return `{"return": {"position": 0, "eof": false}}` + "\n"
		case "guest-file-read":
			if reads.Add(1) == 1 {
				return `{"return": {"count": 1048576, "buf-b64": "AAAA` // and nothing more
			}
			return `{"return": {"count": 0, "buf-b64": "", "eof": true}}` + "\n"
		case "guest-file-close":
			closed.Store(true)
		}
		return healthy(a, r)
	})
	shortWaits(c, 300*time.Millisecond)
	err := returnsWithin(t, 5*time.Second, func() error {
		_, err := c.ReadFile(context.Background(), "/x", io.Discard, nil)
		return err
	})
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "did not answer guest-file-read within") {
		t.Fatalf("ReadFile = %v; want a timeout of guest-file-read", err)
	}
	if !closed.Load() {
		t.Error("the handle was not closed after the timeout")
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after the timeout: %v", err)
	}
}

// The same for a write: each chunk has a bound of its own.
func TestSilentWriteChunkTimesOut(t *testing.T) {
	var writes atomic.Int32
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-file-open":
			return `{"return": 9}` + "\n"
		case "guest-file-write":
			if writes.Add(1) == 1 {
				return ""
			}
			return `{"return": {"count": 0, "eof": false}}` + "\n"
		}
		return healthy(a, r)
	})
	shortWaits(c, 300*time.Millisecond)
	err := returnsWithin(t, 5*time.Second, func() error {
		_, err := c.WriteFile(context.Background(), "/x", strings.NewReader("data"), 4, nil)
		return err
	})
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "did not answer guest-file-write within") {
		t.Fatalf("WriteFile = %v; want a timeout of guest-file-write", err)
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after the timeout: %v", err)
	}
}

// Every command has a bound, even one the client does not know.
func TestEveryCommandHasABound(t *testing.T) {
	for _, cmd := range []string{"guest-ping", "guest-file-close", "guest-file-read", "guest-exec-status",
		"guest-fsfreeze-freeze", "guest-sync-delimited", "guest-no-such-command"} {
		if l := commandLimit(cmd); l.wait <= 0 || l.wait > 5*time.Minute || l.answer <= 0 {
			t.Errorf("%s: %+v", cmd, l)
		}
	}
}

// FileSize closes its handle too, within the close's bound.
func TestFileSize(t *testing.T) {
	var silent atomic.Bool
	s := newScript().
		on("guest-file-open", `{"return": 11}`).
		on("guest-file-seek", `{"return": {"position": 4096, "eof": false}}`)
	s.answers["guest-file-close"] = func(string) string {
		if silent.Load() {
			return ""
		}
		return `{"return": {}}` + "\n"
	}
	c, _ := startAgent(t, s.handle)
	shortWaits(c, 300*time.Millisecond)
	if n, err := c.FileSize(context.Background(), "/x"); n != 4096 || err != nil {
		t.Fatalf("FileSize = %d, %v", n, err)
	}
	want := []string{
		`{"execute":"guest-file-open","arguments":{"path":"/x","mode":"r"}}`,
		`{"execute":"guest-file-seek","arguments":{"handle":11,"offset":0,"whence":2}}`,
		`{"execute":"guest-file-close","arguments":{"handle":11}}`,
	}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	silent.Store(true)
	err := returnsWithin(t, 5*time.Second, func() error {
		_, err := c.FileSize(context.Background(), "/x")
		return err
	})
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "closing /x in the guest") {
		t.Fatalf("FileSize with a silent close = %v", err)
	}
}
