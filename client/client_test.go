package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// serve runs h on a unix socket (short path: sun_path is 108 bytes) and returns a client.
func serve(t *testing.T, h http.Handler, opts ...Option) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return New(sock, opts...)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func TestGetVMAndNotFound(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /1.0/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "hv" {
			t.Errorf("host %q, want hv", r.Host)
		}
		if n := r.PathValue("name"); n != "web1" {
			writeJSON(w, 404, api.Error{Error: `VM "` + n + `" not found`, Code: 404})
			return
		}
		writeJSON(w, 200, api.VM{Name: "web1", State: api.StateRunning, MemoryBytes: 512 << 20})
	})
	c := serve(t, mux)
	vm, err := c.GetVM(context.Background(), "web1")
	if err != nil || vm.Name != "web1" || vm.State != api.StateRunning {
		t.Fatalf("GetVM = %+v, %v", vm, err)
	}
	_, err = c.GetVM(context.Background(), "nope")
	if !IsNotFound(err) || IsConflict(err) {
		t.Fatalf("err %v: IsNotFound false", err)
	}
	if err.Error() != `VM "nope" not found` {
		t.Fatalf("message %q", err.Error())
	}
}

func TestErrorWithoutJSONBody(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusConflict)
	}))
	_, err := c.ListVMs(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 409 || e.Message != "busy" || !IsConflict(err) {
		t.Fatalf("err = %#v", err)
	}
}

func TestRequestBodiesAndPaths(t *testing.T) {
	type seen struct{ method, path, query, body string }
	got := make(chan seen, 10)
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, strings.TrimSpace(string(b))}
		switch {
		case r.Method == http.MethodPatch:
			writeJSON(w, 200, api.VM{Name: "a b"})
		case strings.HasPrefix(r.URL.Path, "/1.0/disks") && !strings.HasSuffix(r.URL.Path, "convert"):
			writeJSON(w, 200, api.DiskInfo{Path: "/d.qcow2"})
		default:
			writeJSON(w, 202, api.Operation{ID: "op1", Status: api.OpRunning})
		}
	}))
	ctx := context.Background()
	cpus := 4
	steps := []struct {
		call func() error
		want seen
	}{
		{func() error { _, err := c.CreateVM(ctx, api.VMCreate{Name: "v", CPUs: 2}); return err },
			seen{"POST", "/1.0/vms", "", `{"name":"v","cpus":2}`}},
		{func() error { _, err := c.UpdateVM(ctx, "a b", api.VMUpdate{CPUs: &cpus}); return err },
			seen{"PATCH", "/1.0/vms/a%20b", "", `{"cpus":4}`}},
		{func() error {
			_, err := c.ChangeState(ctx, "v", api.VMStatePut{Action: api.ActionStop, Timeout: 5})
			return err
		}, seen{"PUT", "/1.0/vms/v/state", "", `{"action":"stop","timeout":5}`}},
		{func() error { _, err := c.DeleteVM(ctx, "v"); return err }, seen{"DELETE", "/1.0/vms/v", "", ""}},
		{func() error { _, err := c.Exec(ctx, "v", api.ExecRequest{Command: []string{"true"}}); return err },
			seen{"POST", "/1.0/vms/v/exec", "", `{"command":["true"]}`}},
		{func() error { _, err := c.DiskInfo(ctx, "/a b&c.qcow2"); return err },
			seen{"GET", "/1.0/disks/info", "path=%2Fa+b%26c.qcow2", ""}},
		{func() error { _, err := c.CreateDisk(ctx, api.DiskCreate{Path: "/d", Size: "1G"}); return err },
			seen{"POST", "/1.0/disks", "", `{"path":"/d","size":"1G"}`}},
		{func() error { _, err := c.ResizeDisk(ctx, api.DiskResize{Path: "/d", Size: "2G"}); return err },
			seen{"POST", "/1.0/disks/resize", "", `{"path":"/d","size":"2G"}`}},
		{func() error { _, err := c.ConvertDisk(ctx, api.DiskConvert{Source: "/a", Target: "/b"}); return err },
			seen{"POST", "/1.0/disks/convert", "", `{"source":"/a","target":"/b"}`}},
		{func() error { _, err := c.CancelOperation(ctx, "op1"); return err }, seen{"DELETE", "/1.0/operations/op1", "", ""}},
	}
	for _, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("%v: %v", s.want, err)
		}
		if g := <-got; g != s.want {
			t.Errorf("sent %+v, want %+v", g, s.want)
		}
	}
}

func TestWaitOperationProgressAndFailure(t *testing.T) {
	var polls atomic.Int32
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "" {
			t.Errorf("wait without ?wait=: %s", r.URL)
		}
		n := polls.Add(1)
		op := api.Operation{ID: "op1", Status: api.OpRunning, Progress: &api.Progress{Stage: "copy", Done: uint64(n) * 10, Total: 100}}
		if n == 3 {
			op.Status, op.Error, op.ErrorCode = api.OpFailure, "disk full: free some space", 507
		}
		writeJSON(w, 200, op)
	}))
	var seenDone []uint64
	op, err := c.WaitOperation(context.Background(), "op1", func(op api.Operation) {
		seenDone = append(seenDone, op.Progress.Done)
	})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 507 || e.Message != "disk full: free some space" {
		t.Fatalf("err = %#v", err)
	}
	if op.Status != api.OpFailure || len(seenDone) != 3 || seenDone[2] != 30 {
		t.Fatalf("op %+v, progress %v", op, seenDone)
	}
}

func TestWaitOperationSuccessAndDecodeResult(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Operation{ID: "x", Status: api.OpSuccess,
			Result: api.ExecResult{ExitCode: 3, Stdout: []byte("out\n"), Stderr: []byte{0xff, 0}}})
	}))
	op, err := c.WaitOperation(context.Background(), "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res api.ExecResult
	if err := DecodeResult(op, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || string(res.Stdout) != "out\n" || string(res.Stderr) != "\xff\x00" {
		t.Fatalf("result %+v", res)
	}
	if err := DecodeResult(api.Operation{ID: "y"}, &res); err == nil {
		t.Fatal("DecodeResult of no result: no error")
	}
}

func TestWaitOperationCancelledCtx(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a long poll that never ends by itself
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.WaitOperation(ctx, "x", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestRequestTimeout(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), WithTimeout(50*time.Millisecond))
	if _, err := c.HostInfo(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestEvents(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query().Get("type"); q != "vm,operation" {
			t.Errorf("type=%q", q)
		}
		w.WriteHeader(200)
		io.WriteString(w, `{"type":"vm","action":"created","resource":"/1.0/vms/a"}`+"\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, `{"type":"operation","action":"updated","message":"`+strings.Repeat("x", 100000)+`"}`+"\n")
		io.WriteString(w, `{"type":"vm","action":"deleted"}`+"\n")
	}))
	var got []string
	err := c.Events(context.Background(), []string{"vm", "operation"}, func(e api.Event) error {
		got = append(got, e.Type+"/"+e.Action)
		return nil
	})
	if err != nil || strings.Join(got, " ") != "vm/created operation/updated vm/deleted" {
		t.Fatalf("got %v, %v", got, err)
	}
	stop := errors.New("stop")
	err = c.Events(context.Background(), []string{"vm", "operation"}, func(api.Event) error { return stop })
	if err != stop {
		t.Fatalf("err = %v, want fn's error", err)
	}
}

func TestEventsCtxCancel(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		io.WriteString(w, `{"type":"vm"}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	err := c.Events(ctx, nil, func(api.Event) error { cancel(); return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestConsoleUpgradeKeepsEarlyBytes(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/1.0/vms/nope/console" {
			writeJSON(w, 404, api.Error{Error: "no such VM", Code: 404})
			return
		}
		if r.Header.Get("Upgrade") != "hv-console" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			t.Errorf("headers %v", r.Header)
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		// The banner rides in the same write as the answer, so the client's reader buffers it.
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hv-console\r\n\r\nlogin: ")
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo:"+line)
	}))
	conn, err := c.Console(context.Background(), "vm1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "root\n"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(conn)
	if err != nil || string(all) != "login: echo:root\n" {
		t.Fatalf("read %q, %v", all, err)
	}
	if _, err := c.Console(context.Background(), "nope"); !IsNotFound(err) {
		t.Fatalf("err = %v", err)
	}
}

func TestConsoleHandshakeTimeout(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		bufio.NewReader(conn).ReadByte() // never answers
	}), WithTimeout(50*time.Millisecond))
	if _, err := c.Console(context.Background(), "vm1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestConsoleLog(t *testing.T) {
	c := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "boot ok\n")
	}))
	b, err := c.ConsoleLog(context.Background(), "vm1")
	if err != nil || string(b) != "boot ok\n" {
		t.Fatalf("%q %v", b, err)
	}
}

func TestDialErrorNamesSocket(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "missing.sock"))
	_, err := c.HostInfo(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing.sock") {
		t.Fatalf("err = %v", err)
	}
}
