package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// short are timeouts a test can outlast quickly.
var short = Timeouts{Header: 200 * time.Millisecond, Read: 200 * time.Millisecond, Write: 200 * time.Millisecond, Idle: time.Second}

// streamHost adds the file transfers and a slow call to fakeHost.
type streamHost struct {
	*fakeHost
	uploaded  chan []byte // what WriteGuestFile read
	readErr   chan error  // how ReadGuestFile's writing ended
	slowCalls chan error  // the request context's state after a slow call
}

func (h *streamHost) WriteGuestFile(ctx context.Context, name, path string, mode int, r io.Reader, size int64) (api.FileInfo, error) {
	data, err := io.ReadAll(r)
	h.uploaded <- data
	return api.FileInfo{Path: path, Size: int64(len(data))}, err
}

// ReadGuestFile sends an endless file, until a write fails.
func (h *streamHost) ReadGuestFile(ctx context.Context, name, path string, w io.Writer, sized func(int64)) (api.FileInfo, error) {
	sized(-1)
	chunk := make([]byte, 64<<10)
	for {
		if _, err := w.Write(chunk); err != nil {
			h.readErr <- err
			return api.FileInfo{}, err
		}
	}
}

// Freeze stands for a call that takes a while after the body was read.
func (h *streamHost) Freeze(ctx context.Context, name string, req api.FreezeRequest) (api.FreezeStatus, error) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	h.slowCalls <- ctx.Err()
	return api.FreezeStatus{}, ctx.Err()
}

// newTimedServer serves the API as hvd does, with the given timeouts.
func newTimedServer(t *testing.T, tm Timeouts) (*httptest.Server, *streamHost, *events.Bus) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	bus := events.NewBus(log)
	ops := operation.NewManager(bus, StatusCode)
	h := &streamHost{fakeHost: &fakeHost{ops: ops, release: make(chan struct{})},
		uploaded: make(chan []byte, 1), readErr: make(chan error, 1), slowCalls: make(chan error, 1)}
	s := New(fakeRoles(h), ops, bus, log)
	s.Timeouts = tm
	srv := httptest.NewUnstartedServer(s)
	srv.Config = s.HTTPServer()
	srv.Start()
	t.Cleanup(func() { close(h.release); srv.Close() })
	return srv, h, bus
}

// cutOff sends raw on a new connection and waits for hvd to close it; it
// fails if hvd still holds the connection after wait.
func cutOff(t *testing.T, srv *httptest.Server, raw string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("hvd still holds the connection %s after a partial request (%q); got %q", wait, raw, got)
	}
	return string(got)
}

// A client that sends its headers slowly (slow loris) is cut off.
func TestSlowHeadersAreCutOff(t *testing.T) {
	srv, _, _ := newTimedServer(t, short)
	cutOff(t, srv, "GET /1.0/host HTTP/1.1\r\nHost: hv\r\nX-Slow: ", 5*time.Second)
}

// A client that announces a body and stops sending it is cut off, with an
// answer that says why.
func TestSlowBodyIsCutOff(t *testing.T) {
	srv, h, _ := newTimedServer(t, short)
	got := cutOff(t, srv, "POST /1.0/vms HTTP/1.1\r\nHost: hv\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":", 5*time.Second)
	if !strings.Contains(got, "400 Bad Request") || !strings.Contains(got, "not received in time") {
		t.Errorf("answer to a stalled body: %q", got)
	}
	if len(h.created) != 0 {
		t.Fatal("a partial body reached the host")
	}
	// A body that trickles in stays cut off at the deadline, even while bytes arrive.
	c, _ := net.Dial("tcp", srv.Listener.Addr().String())
	defer c.Close()
	fmt.Fprintf(c, "POST /1.0/vms HTTP/1.1\r\nHost: hv\r\nContent-Length: 100\r\n\r\n")
	start := time.Now()
	for time.Since(start) < 10*short.Read {
		if _, err := c.Write([]byte(" ")); err != nil {
			return // cut off
		}
		time.Sleep(short.Read / 4)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadAll(c); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("a trickling body held the connection for %s", time.Since(start))
		}
	}
}

// A client that stops reading an answer is cut off: hvd's writes fail rather
// than wait for it forever.
func TestSlowReaderIsCutOff(t *testing.T) {
	srv, h, _ := newTimedServer(t, short)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /1.0/vms/web/files?path=/big HTTP/1.1\r\nHost: hv\r\n\r\n")
	// Never read.
	select {
	case <-h.readErr:
	case <-time.After(10 * time.Second):
		t.Fatal("hvd still writes to a client that stopped reading 10s ago")
	}
}

// Streams run as long as they need, past every timeout: the event stream,
// a wait on an operation, an upload that keeps moving, a console, and a
// call that works longer than the body timeout after reading its body.
func TestStreamsOutliveTheTimeouts(t *testing.T) {
	tm := Timeouts{Header: 300 * time.Millisecond, Read: 300 * time.Millisecond, Write: 300 * time.Millisecond, Idle: time.Second}
	srv, h, bus := newTimedServer(t, tm)
	long := 2 * tm.Read

	resp, err := http.Get(srv.URL + "/1.0/events?type=vm")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(long)
	bus.Publish(api.Event{Type: "vm", Action: "state-changed"})
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || !strings.Contains(line, "state-changed") {
		t.Fatalf("event stream after %s idle: %q, %v", long, line, err)
	}

	code, body := do(t, "POST", srv.URL+"/1.0/vms", `{"name":"web","image":"/x.qcow2"}`)
	var op api.Operation
	json.Unmarshal([]byte(body), &op)
	if code != 202 {
		t.Fatalf("create: %d %s", code, body)
	}
	start := time.Now()
	if code, body := do(t, "GET", srv.URL+"/1.0/operations/"+op.ID+"?wait="+long.String(), ""); code != 200 || time.Since(start) < long {
		t.Fatalf("a wait of %s: %d after %s: %s", long, code, time.Since(start), body)
	}

	pr, pw := io.Pipe()
	go func() {
		for range 12 {
			pw.Write([]byte("x"))
			time.Sleep(tm.Read / 6)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", srv.URL+"/1.0/vms/web/files?path=/f", pr)
	req.ContentLength = 12
	up, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	up.Body.Close()
	if got := <-h.uploaded; up.StatusCode != 200 || string(got) != strings.Repeat("x", 12) {
		t.Fatalf("an upload taking %s: %d, %q reached the guest", 2*tm.Read, up.StatusCode, got)
	}

	start = time.Now()
	if code, body := do(t, "POST", srv.URL+"/1.0/vms/web/freeze", `{}`); code == 499 || <-h.slowCalls != nil {
		t.Fatalf("a call working 1s after its body was read was canceled after %s: %d %s", time.Since(start), code, body)
	}

	guestSide, hostSide := net.Pipe()
	h.console = hostSide
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /1.0/vms/web/console HTTP/1.1\r\nHost: hv\r\nConnection: Upgrade\r\nUpgrade: hv-console\r\n\r\n")
	br := bufio.NewReader(c)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	time.Sleep(long)
	go guestSide.Write([]byte("login: "))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 7)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "login: " {
		t.Fatalf("console after %s idle: %q, %v", long, got, err)
	}
}
