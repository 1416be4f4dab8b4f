package qga

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// freezer is a fake agent with the real one's freeze behavior: while frozen
// only a few commands run.
type freezer struct {
	mu     sync.Mutex
	frozen bool
	slow   time.Duration // how long guest-fsfreeze-freeze takes
}

func (f *freezer) handle(a *fakeAgent, r fakeReq) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Execute {
	case "guest-sync-delimited":
		return syncReply(r)
	case "guest-fsfreeze-status":
		if f.frozen {
			return `{"return": "frozen"}` + "\n"
		}
		return `{"return": "thawed"}` + "\n"
	case "guest-fsfreeze-thaw":
		n := 0
		if f.frozen {
			n = 3
		}
		f.frozen = false
		return fmt.Sprintf(`{"return": %d}`+"\n", n)
	case "guest-info", "guest-ping":
		return infoAnswer(f.frozen)
	}
	if f.frozen {
		return `{"error": {"class": "CommandNotFound", "desc": "Command ` + r.Execute + ` has been disabled: the agent is in frozen state"}}` + "\n"
	}
	if r.Execute == "guest-fsfreeze-freeze" {
		time.Sleep(f.slow) // the agent is single threaded: nothing else runs meanwhile
		f.frozen = true
		return `{"return": 3}` + "\n"
	}
	return `{"return": {}}` + "\n"
}

func infoAnswer(frozen bool) string {
	on := map[bool]string{false: "true", true: "false"}[frozen]
	return `{"return": {"version": "9.0.0", "supported_commands": [` +
		`{"name": "guest-fsfreeze-freeze", "enabled": ` + on + `, "success-response": true},` +
		`{"name": "guest-fsfreeze-thaw", "enabled": true, "success-response": true},` +
		`{"name": "guest-file-open", "enabled": ` + on + `, "success-response": true}]}}` + "\n"
}

func TestFreezeThaw(t *testing.T) {
	f := &freezer{}
	c, a := startAgent(t, f.handle)
	ctx := testCtx(t)
	if s, err := c.FreezeStatus(ctx); err != nil || s != "thawed" {
		t.Fatalf("FreezeStatus = %q, %v", s, err)
	}
	if missing, err := c.Supports(ctx, "guest-file-open"); err != nil || missing != nil {
		t.Fatalf("Supports = %v, %v", missing, err)
	}
	if n, err := c.Freeze(ctx); err != nil || n != 3 {
		t.Fatalf("Freeze = %d, %v", n, err)
	}
	if s, err := c.FreezeStatus(ctx); err != nil || s != "frozen" {
		t.Fatalf("FreezeStatus = %q, %v", s, err)
	}
	// Freeze dropped the cached answer: it is out of date now.
	if missing, err := c.Supports(ctx, "guest-file-open"); err != nil || !slices.Equal(missing, []string{"guest-file-open"}) {
		t.Errorf("Supports while frozen = %v, %v", missing, err)
	}
	_, err := c.FileOpen(ctx, "/etc/hostname", "r")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "thaw them first") {
		t.Errorf("FileOpen while frozen = %v", err)
	}
	if _, err := c.Freeze(ctx); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Freeze while frozen = %v", err)
	}
	if n, err := c.Thaw(ctx); err != nil || n != 3 {
		t.Fatalf("Thaw = %d, %v", n, err)
	}
	if missing, err := c.Supports(ctx, "guest-file-open"); err != nil || missing != nil {
		t.Errorf("Supports after Thaw = %v, %v", missing, err)
	}
	want := []string{"guest-sync-delimited", "guest-fsfreeze-status", "guest-info", "guest-fsfreeze-freeze",
		"guest-fsfreeze-status", "guest-info", "guest-file-open", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-info"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v\nwant %v", got, want)
	}
}

func TestFreezeJSON(t *testing.T) {
	s := newScript().
		on("guest-fsfreeze-freeze", `{"return": 2}`).
		on("guest-fsfreeze-status", `{"return": "frozen"}`).
		on("guest-fsfreeze-thaw", `{"return": 2}`)
	c, _ := startAgent(t, s.handle)
	ctx := testCtx(t)
	c.Freeze(ctx)
	c.FreezeStatus(ctx)
	c.Thaw(ctx)
	want := []string{`{"execute":"guest-fsfreeze-freeze"}`, `{"execute":"guest-fsfreeze-status"}`, `{"execute":"guest-fsfreeze-thaw"}`}
	if got := s.sent(); !slices.Equal(got, want) {
		t.Errorf("sent %q", got)
	}
}

func TestFreezeErrorAnswer(t *testing.T) {
	s := newScript().on("guest-fsfreeze-freeze",
		`{"error": {"class": "GenericError", "desc": "failed to freeze /: Operation not supported"}}`)
	c, a := startAgent(t, s.handle)
	_, err := c.Freeze(testCtx(t))
	var ge *Error
	if !errors.As(err, &ge) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Freeze = %v", err)
	}
	// The agent thawed by itself; no Thaw from us.
	if slices.Contains(a.commands(), "guest-fsfreeze-thaw") {
		t.Errorf("agent saw %v", a.commands())
	}
}

func TestFreezeTimeoutThaws(t *testing.T) {
	f := &freezer{slow: 300 * time.Millisecond}
	c, a := startAgent(t, f.handle)
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Freeze(shortCtx(t, 100*time.Millisecond))
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "thawed the guest's file systems again") {
		t.Fatalf("Freeze = %v", err)
	}
	if s, err := c.FreezeStatus(testCtx(t)); err != nil || s != "thawed" {
		t.Errorf("after a timed out Freeze: %q, %v", s, err)
	}
	want := []string{"guest-sync-delimited", "guest-ping", "guest-fsfreeze-freeze", "guest-sync-delimited", "guest-fsfreeze-thaw", "guest-fsfreeze-status"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v", got)
	}
}

func TestFreezeNotSentNoThaw(t *testing.T) {
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "slow-command" {
			return ""
		}
		return healthy(a, r)
	})
	go c.Call(shortCtx(t, 500*time.Millisecond), "slow-command", nil, nil)
	a.waitFor(t, "slow-command")
	// The freeze never went out, so thawing would only undo someone else's.
	if _, err := c.Freeze(shortCtx(t, 100*time.Millisecond)); !errors.Is(err, errdefs.ErrTimeout) || strings.Contains(err.Error(), "thaw") {
		t.Fatalf("Freeze = %v", err)
	}
	time.Sleep(600 * time.Millisecond)
	if got := a.commands(); slices.Contains(got, "guest-fsfreeze-thaw") || slices.Contains(got, "guest-fsfreeze-freeze") {
		t.Errorf("agent saw %v", got)
	}
}
