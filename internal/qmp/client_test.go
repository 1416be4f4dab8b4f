package qmp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/errdefs"
)

func dialFake(t *testing.T) (*Client, *fakeQEMU) {
	t.Helper()
	path, ready := listenFake(t, standardHandshake)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, <-ready
}

// testCtx bounds a call that must not hang; generous, since -race on a loaded
// 2-core machine moves megabytes slowly.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialHandshake(t *testing.T) {
	c, _ := dialFake(t)
	want := Version{Major: 7, Minor: 2, Micro: 1, Package: "Debian 1:7.2+dfsg-7"}
	if got := c.Version(); got != want {
		t.Errorf("Version() = %+v, want %+v", got, want)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err() on a live connection = %v", err)
	}
}

func TestDialBadGreeting(t *testing.T) {
	path, _ := listenFake(t, func(f *fakeQEMU) { f.send(`{"hello": 1}`) })
	_, err := Dial(testCtx(t), path)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("Dial = %v, want an ErrUnavailable greeting error", err)
	}
}

func TestDialCapabilitiesRefused(t *testing.T) {
	path, _ := listenFake(t, func(f *fakeQEMU) {
		f.send(testGreeting)
		f.read()
		f.send(`{"error": {"class": "GenericError", "desc": "nope"}, "id": "caps"}`)
	})
	_, err := Dial(testCtx(t), path)
	var qe *Error
	if !errors.As(err, &qe) || qe.Desc != "nope" || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Dial = %v, want a wrapped *Error", err)
	}
}

func TestDialTimeoutWithoutGreeting(t *testing.T) {
	path, _ := listenFake(t, func(f *fakeQEMU) { time.Sleep(2 * time.Second) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, path)
	if !errors.Is(err, errdefs.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v after a 100ms deadline", d)
	}
}

func TestDialCanceled(t *testing.T) {
	path, _ := listenFake(t, func(f *fakeQEMU) { time.Sleep(2 * time.Second) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Dial(ctx, path)
	if !errors.Is(err, errdefs.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want ErrCanceled", err)
	}
}

func TestDialNoSocket(t *testing.T) {
	_, err := Dial(testCtx(t), "/nonexistent/qmp.sock")
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Dial = %v, want ErrUnavailable", err)
	}
}

func TestOutOfOrderAnswers(t *testing.T) {
	c, f := dialFake(t)
	const n = 5
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var got struct{ N int }
			if err := c.Execute(testCtx(t), "echo", map[string]int{"n": i}, &got); err != nil {
				errs <- err
				return
			}
			if got.N != i {
				errs <- fmt.Errorf("call %d got answer %d", i, got.N)
			}
		})
	}
	var cmds []fakeCmd
	for range n {
		cmd, _ := f.read()
		cmds = append(cmds, cmd)
	}
	for i := len(cmds) - 1; i >= 0; i-- { // answer in reverse
		f.answer(cmds[i].ID, fmt.Sprintf(`{"N": %s}`, strings.TrimPrefix(strings.TrimSuffix(string(cmds[i].Arguments), "}"), `{"n":`)))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEventsInterleaved(t *testing.T) {
	c, f := dialFake(t)
	sub, cancelSub := c.Subscribe()
	done := make(chan error, 1)
	go func() {
		var s StatusInfo
		err := c.Execute(testCtx(t), "query-status", nil, &s)
		if err == nil && (s.Status != "paused" || s.Running) {
			err = fmt.Errorf("status = %+v", s)
		}
		done <- err
	}()
	cmd, _ := f.read()
	if cmd.Arguments != nil {
		t.Errorf("nil args sent as %s", cmd.Arguments)
	}
	f.send(`{"timestamp": {"seconds": 1700000000, "microseconds": 250}, "event": "STOP"}`)
	f.answer(cmd.ID, `{"status": "paused", "running": false, "singlestep": false}`)
	f.send(`{"timestamp": {"seconds": -1, "microseconds": -1}, "event": "BLOCK_JOB_READY", "data": {"device": "d0"}}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan Event{"Events": c.Events(), "Subscribe": sub} {
		ev := recvEvent(t, ch)
		if ev.Name != "STOP" || !ev.Timestamp.Equal(time.Unix(1700000000, 250000)) || ev.Data != nil {
			t.Errorf("%s: first event = %+v", name, ev)
		}
		ev = recvEvent(t, ch)
		if ev.Name != "BLOCK_JOB_READY" || !ev.Timestamp.IsZero() || string(ev.Data) != `{"device": "d0"}` {
			t.Errorf("%s: second event = %+v (data %s)", name, ev, ev.Data)
		}
	}
	cancelSub()
	if _, ok := <-sub; ok {
		t.Error("subscription channel still open after cancel")
	}
	cancelSub() // idempotent
}

func recvEvent(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

func TestErrorAnswer(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		cmd, _ := f.read()
		f.send(`{"id": ` + string(cmd.ID) + `, "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`)
	}()
	err := c.Execute(testCtx(t), "device_del", map[string]string{"id": "x"}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || qe.Desc != "Device 'x' not found" {
		t.Fatalf("Execute = %v, want *Error DeviceNotFound", err)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("DeviceNotFound does not match errdefs.ErrNotFound: %v", err)
	}
	if !strings.Contains(err.Error(), "device_del") {
		t.Errorf("error does not name the command: %v", err)
	}
}

func TestDisconnectMidCall(t *testing.T) {
	c, f := dialFake(t)
	events := c.Events()
	results := make(chan error, 3)
	for range 3 {
		go func() { results <- c.Execute(testCtx(t), "query-cpus-fast", nil, nil) }()
	}
	for range 3 {
		f.read()
	}
	f.send(`{"event": "SHUTDOWN", "data": {"guest": false}}`)
	f.conn.Close()
	start := time.Now()
	for range 3 {
		if err := <-results; !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("Execute = %v, want ErrUnavailable", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("calls returned %v after the disconnect", d)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if err := c.Err(); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("Err() = %v", err)
	}
	// The event sent before the end is still delivered, then the channel closes.
	if ev := recvEvent(t, events); ev.Name != "SHUTDOWN" {
		t.Errorf("event = %+v", ev)
	}
	if _, ok := <-events; ok {
		t.Error("Events() not closed after the connection ended")
	}
	if err := c.Execute(testCtx(t), "x", nil, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Execute after end = %v", err)
	}
	sub, _ := c.Subscribe()
	if _, ok := <-sub; ok {
		t.Error("Subscribe after end gave an open channel")
	}
}

func TestContextTimeoutDiscardsLateAnswer(t *testing.T) {
	c, f := dialFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Execute(ctx, "slow", nil, nil)
	if !errors.Is(err, errdefs.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Execute = %v, want ErrTimeout", err)
	}
	slow, _ := f.read()
	go func() {
		fast, _ := f.read()
		f.answer(slow.ID, `{"which": "slow"}`) // late: must be dropped
		f.answer(fast.ID, `{"which": "fast"}`)
	}()
	var got struct{ Which string }
	if err := c.Execute(testCtx(t), "fast", nil, &got); err != nil || got.Which != "fast" {
		t.Fatalf("Execute = %v, %+v", err, got)
	}

	cctx, ccancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, ccancel)
	if err := c.Execute(cctx, "never", nil, nil); !errors.Is(err, errdefs.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute = %v, want ErrCanceled", err)
	}
	if c.Err() != nil {
		t.Fatalf("connection ended: %v", c.Err())
	}
}

func TestFDPassing(t *testing.T) {
	c, f := dialFake(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go func() {
		cmd, oob := f.read()
		fds := parseRights(t, oob)
		if cmd.Execute != "getfd" || len(fds) != 1 {
			f.send(`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": ` + string(cmd.ID) + `}`)
			return
		}
		got := os.NewFile(uintptr(fds[0]), "received")
		got.Write([]byte("through the socket"))
		got.Close()
		f.answer(cmd.ID, `{}`)
	}()
	if err := c.ExecuteWithFD(testCtx(t), "getfd", map[string]string{"fdname": "p"}, w, nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if string(buf[:n]) != "through the socket" {
		t.Errorf("pipe got %q", buf[:n])
	}
	// The caller's file must stay usable (and non-blocking mode untouched).
	if _, err := w.Write([]byte("x")); err != nil {
		t.Errorf("caller's file broken after passing: %v", err)
	}
	if err := c.ExecuteWithFD(testCtx(t), "getfd", nil, nil, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("nil file: %v", err)
	}
}

func parseRights(t *testing.T, oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Errorf("ParseSocketControlMessage: %v", err)
		return nil
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Errorf("ParseUnixRights: %v", err)
		}
		fds = append(fds, got...)
	}
	return fds
}

func TestLargeAnswer(t *testing.T) {
	c, f := dialFake(t)
	big := strings.Repeat("x", 5<<20)
	go func() {
		cmd, _ := f.read()
		f.answer(cmd.ID, `"`+big+`"`)
	}()
	var got string
	if err := c.Execute(testCtx(t), "query-qmp-schema", nil, &got); err != nil || got != big {
		t.Fatalf("Execute = %v, len %d", err, len(got))
	}
}

func TestLineTooLongEndsConnection(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		f.read()
		f.conn.Write([]byte(`{"return": "` + strings.Repeat("x", maxLine) + `"}` + "\n"))
	}()
	// 16 MiB through a socket under -race on a loaded CI box is slow.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := c.Execute(ctx, "query-qmp-schema", nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "16 MiB") {
		t.Fatalf("Execute = %v", err)
	}
	<-c.Done()
}

func TestMalformedMessageEndsConnection(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		f.read()
		f.send(`this is not json`)
	}()
	err := c.Execute(testCtx(t), "query-status", nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("Execute = %v", err)
	}
}

func TestUnreadEventsDoNotBlock(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		cmd, _ := f.read()
		var b strings.Builder
		for i := range eventBacklog + 10 {
			fmt.Fprintf(&b, `{"event": "E", "data": {"i": %d}}`+"\n", i)
		}
		f.conn.Write([]byte(b.String()))
		f.answer(cmd.ID, `{}`)
	}()
	// Nobody reads Events(); the answer behind the flood must still arrive.
	if err := c.Execute(testCtx(t), "x", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The pump already holds event 0 for sending; the backlog behind it
	// keeps the newest eventBacklog events, so 1..9 are dropped.
	if got := c.DroppedEvents(); got != 9 {
		t.Errorf("DroppedEvents = %d, want 9", got)
	}
	for _, want := range []string{`{"i": 0}`, `{"i": 10}`, `{"i": 11}`} {
		if ev := recvEvent(t, c.Events()); string(ev.Data) != want {
			t.Errorf("event data = %s, want %s", ev.Data, want)
		}
	}
}

func TestCloseUnblocksCalls(t *testing.T) {
	c, f := dialFake(t)
	res := make(chan error, 1)
	go func() { res <- c.Execute(context.Background(), "hang", nil, nil) }()
	f.read()
	c.Close()
	if err := <-res; !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Execute = %v", err)
	}
	if !errors.Is(c.Err(), errClosed) {
		t.Errorf("Err() = %v", c.Err())
	}
	if _, ok := <-c.Events(); ok {
		t.Error("Events() open after Close")
	}
	c.Close()
}

func TestBadArguments(t *testing.T) {
	c, _ := dialFake(t)
	err := c.Execute(testCtx(t), "x", map[string]any{"f": func() {}}, nil)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Execute = %v", err)
	}
}

func TestResultDecodeError(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		cmd, _ := f.read()
		f.answer(cmd.ID, `"a string"`)
	}()
	var n int
	if err := c.Execute(testCtx(t), "x", nil, &n); err == nil || !strings.Contains(err.Error(), "decoding") {
		t.Fatalf("Execute = %v", err)
	}
}
