package qga

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestSyncOnlyBeforeFirstCall(t *testing.T) {
	c, a := startAgent(t, healthy)
	for range 2 {
		if err := c.Ping(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"guest-sync-delimited", "guest-ping", "guest-ping"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v, want %v", got, want)
	}
}

func TestStaleAnswerAfterTimeout(t *testing.T) {
	var infos atomic.Int32
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-sync-delimited":
			if infos.Load() == 1 {
				// The slow first guest-info finally answers, ahead of the sync.
				return `{"return": {"version": "stale"}}` + "\n" + syncReply(r)
			}
			return syncReply(r)
		case "guest-info":
			if infos.Add(1) == 1 {
				return "" // too slow
			}
			return `{"return": {"version": "fresh"}}` + "\n"
		}
		return ""
	})
	_, err := c.Info(shortCtx(t, 100*time.Millisecond))
	if !errors.Is(err, errdefs.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "did not answer guest-info within 100ms (is qemu-guest-agent running in the guest?)") {
		t.Fatalf("Info = %v", err)
	}
	info, err := c.Info(testCtx(t))
	if err != nil || info.Version != "fresh" {
		t.Fatalf("Info after timeout = %+v, %v; want the fresh answer", info, err)
	}
	want := []string{"guest-sync-delimited", "guest-info", "guest-sync-delimited", "guest-info"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v, want %v", got, want)
	}
}

func TestStaleSyncAnswerIsSkipped(t *testing.T) {
	var syncs atomic.Int32
	var firstID atomic.Pointer[fakeReq]
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-sync-delimited" {
			if syncs.Add(1) == 1 {
				firstID.Store(&r)
				return "" // the first sync times out...
			}
			// ...and its answer arrives just before the second one's.
			return syncReply(*firstID.Load()) + syncReply(r)
		}
		return healthy(a, r)
	})
	if err := c.Ping(shortCtx(t, 100*time.Millisecond)); !strings.Contains(err.Error(), "did not answer guest-sync-delimited (before guest-ping)") {
		t.Fatalf("Ping = %v", err)
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestStraySyncAnswerDuringCallForcesResync(t *testing.T) {
	var pings atomic.Int32
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-ping" && pings.Add(1) == 2 {
			return "\xff{\"return\": 42}\n{\"return\": {}}\n"
		}
		return healthy(a, r)
	})
	for range 3 {
		if err := c.Ping(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"guest-sync-delimited", "guest-ping", "guest-ping", "guest-sync-delimited", "guest-ping"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v, want %v", got, want)
	}
}

func TestGarbage(t *testing.T) {
	var pings atomic.Int32
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-sync-delimited":
			// Noise before and around the sentinel must not matter.
			return "\x00\x01binary junk {\"ret\nnot json\n" + syncReply(r)
		case "guest-ping":
			if pings.Add(1) == 1 {
				return "Welcome to the guest console\n"
			}
		}
		return healthy(a, r)
	})
	err := c.Ping(testCtx(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "guest agent sent garbage") {
		t.Fatalf("Ping = %v", err)
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after garbage: %v", err)
	}
	if got := a.commands(); len(got) != 4 || got[2] != "guest-sync-delimited" {
		t.Errorf("agent saw %v, want a sync before the second ping", got)
	}
}

func TestLineTooLong(t *testing.T) {
	var pings atomic.Int32
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-ping" && pings.Add(1) == 1 {
			return strings.Repeat("x", smallAnswer+1) + "\n"
		}
		return healthy(a, r)
	})
	err := c.Ping(testCtx(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "garbage") ||
		!strings.Contains(err.Error(), fmt.Sprintf("guest-ping: answer too long: over %d KiB", smallAnswer>>10)) {
		t.Fatalf("Ping = %v", err)
	}
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping after an oversized line: %v", err)
	}
}

func TestHangHonorsContextThenResyncs(t *testing.T) {
	var alive atomic.Bool
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if !alive.Load() {
			return "" // agent not running: writes vanish
		}
		return healthy(a, r)
	})
	start := time.Now()
	err := c.Ping(shortCtx(t, 100*time.Millisecond))
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "is qemu-guest-agent running in the guest?") {
		t.Fatalf("Ping = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Ping returned after %v with a 100ms deadline", d)
	}
	alive.Store(true)
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping once the agent is up: %v", err)
	}
}

func TestWaitingCallerGivesUp(t *testing.T) {
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "slow-command" {
			return ""
		}
		return healthy(a, r)
	})
	slow := make(chan error, 1)
	go func() { slow <- c.Call(shortCtx(t, 500*time.Millisecond), "slow-command", nil, nil) }()
	a.waitFor(t, "slow-command") // it holds the stream now
	start := time.Now()
	err := c.Ping(shortCtx(t, 100*time.Millisecond))
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "busy with slow-command") {
		t.Fatalf("Ping = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waiting caller returned after %v", d)
	}
	if err := <-slow; !errors.Is(err, errdefs.ErrTimeout) {
		t.Errorf("slow call = %v", err)
	}
}

func TestCanceled(t *testing.T) {
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-ping" {
			return ""
		}
		return healthy(a, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := c.Ping(ctx)
	if !errors.Is(err, errdefs.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping = %v", err)
	}
}

func TestDisconnect(t *testing.T) {
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-ping" {
			a.conn.Close()
			return ""
		}
		return healthy(a, r)
	})
	err := c.Ping(testCtx(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "connection closed") {
		t.Fatalf("Ping = %v", err)
	}
	start := time.Now()
	if err := c.Ping(testCtx(t)); !errors.Is(err, errdefs.ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("Ping on a dead connection = %v after %v", err, time.Since(start))
	}
}

func TestCloseUnblocksCall(t *testing.T) {
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string { return "" })
	res := make(chan error, 1)
	go func() { res <- c.Ping(context.Background()) }()
	a.waitFor(t, "guest-sync-delimited")
	c.Close()
	select {
	case err := <-res:
		if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
			t.Errorf("Ping = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock the call")
	}
	if err := c.Ping(testCtx(t)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Ping after Close = %v", err)
	}
}

func TestErrorAnswer(t *testing.T) {
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-fsfreeze-freeze" {
			return `{"error": {"class": "CommandNotFound", "desc": "The command guest-fsfreeze-freeze has not been found"}}` + "\n"
		}
		return healthy(a, r)
	})
	err := c.Call(testCtx(t), "guest-fsfreeze-freeze", nil, nil)
	var ge *Error
	if !errors.As(err, &ge) || ge.Class != "CommandNotFound" {
		t.Fatalf("Call = %v", err)
	}
	if err := c.Ping(testCtx(t)); err != nil { // an error answer leaves the stream in step
		t.Fatal(err)
	}
}

func TestShutdown(t *testing.T) {
	var fail atomic.Bool
	c, a := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		if r.Execute == "guest-shutdown" {
			if fail.Load() {
				return `{"error": {"class": "GenericError", "desc": "child process has failed to shutdown"}}` + "\n"
			}
			return "" // success is silent
		}
		return healthy(a, r)
	})
	start := time.Now()
	if err := c.Shutdown(testCtx(t), "powerdown"); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if d := time.Since(start); d < shutdownQuiet || d > shutdownQuiet+3*time.Second {
		t.Errorf("Shutdown took %v, want about %v", d, shutdownQuiet)
	}
	fail.Store(true)
	var ge *Error
	if err := c.Shutdown(testCtx(t), "reboot"); !errors.As(err, &ge) {
		t.Fatalf("Shutdown = %v, want *Error", err)
	}
	if err := c.Shutdown(testCtx(t), "explode"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Shutdown(explode) = %v", err)
	}
	fail.Store(false)
	if err := c.Shutdown(shortCtx(t, 100*time.Millisecond), "halt"); !errors.Is(err, errdefs.ErrTimeout) {
		t.Fatalf("Shutdown with a short ctx = %v", err)
	}
	// Silence leaves the stream state unknown (a late error may come), so
	// the next call syncs; an error answer leaves it in step.
	want := []string{"guest-sync-delimited", "guest-shutdown", "guest-sync-delimited", "guest-shutdown", "guest-shutdown"}
	if got := a.commands(); !slices.Equal(got, want) {
		t.Errorf("agent saw %v, want %v", got, want)
	}
}

func TestRunPollsUntilExit(t *testing.T) {
	var polls atomic.Int32
	var execArgs atomic.Value
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-exec":
			execArgs.Store(string(r.Arguments))
			return `{"return": {"pid": 77}}` + "\n"
		case "guest-exec-status":
			if string(r.Arguments) != `{"pid":77}` {
				return `{"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}` + "\n"
			}
			if polls.Add(1) < 4 {
				return `{"return": {"exited": false}}` + "\n"
			}
			return fmt.Sprintf(`{"return": {"exited": true, "exitcode": 3, "out-data": %q, "err-data": %q, "out-truncated": true}}`+"\n",
				base64.StdEncoding.EncodeToString([]byte("out\n")), base64.StdEncoding.EncodeToString([]byte("err\n")))
		}
		return healthy(a, r)
	})
	st, err := c.Run(testCtx(t), ExecRequest{Path: "/bin/sh", Args: []string{"-c", "x"}, Env: []string{"A=1"}, Input: []byte("in")})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exited || st.ExitCode != 3 || string(st.Stdout) != "out\n" || string(st.Stderr) != "err\n" || !st.Truncated {
		t.Errorf("status = %+v", st)
	}
	want := `{"path":"/bin/sh","arg":["-c","x"],"env":["A=1"],"input-data":"aW4=","capture-output":true}`
	if got, _ := execArgs.Load().(string); got != want {
		t.Errorf("guest-exec arguments = %s, want %s", got, want)
	}
}

func TestRunContextEnds(t *testing.T) {
	c, _ := startAgent(t, func(a *fakeAgent, r fakeReq) string {
		switch r.Execute {
		case "guest-exec":
			return `{"return": {"pid": 5}}` + "\n"
		case "guest-exec-status":
			return `{"return": {"exited": false}}` + "\n"
		}
		return healthy(a, r)
	})
	_, err := c.Run(shortCtx(t, 300*time.Millisecond), ExecRequest{Path: "sleep"})
	if !errors.Is(err, errdefs.ErrTimeout) || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Run = %v", err)
	}
}
