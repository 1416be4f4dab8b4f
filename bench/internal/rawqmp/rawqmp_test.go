package rawqmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// fakeQMP plays QEMU's side of a QMP socket: the greeting, qmp_capabilities, an event
// before some answers, getfd (which must bring a file descriptor), a migration that
// completes on its second query, and query-status.
type fakeQMP struct {
	gotFD    chan *os.File
	migrates int
}

func serveFakeQMP(t *testing.T) (string, *fakeQMP) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvbq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &fakeQMP{gotFD: make(chan *os.File, 1)}
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintln(conn, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}`)
		negotiated := false
		for {
			buf, oob := make([]byte, 4096), make([]byte, 128)
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var fd *os.File
			if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if fds, err := syscall.ParseUnixRights(&m); err == nil && len(fds) > 0 {
						fd = os.NewFile(uintptr(fds[0]), "passed")
					}
				}
			}
			var req struct {
				Execute   string         `json:"execute"`
				Arguments map[string]any `json:"arguments"`
			}
			if err := json.Unmarshal(buf[:n], &req); err != nil {
				fmt.Fprintln(conn, `{"error": {"class": "GenericError", "desc": "bad json"}}`)
				continue
			}
			if !negotiated && req.Execute != "qmp_capabilities" {
				fmt.Fprintln(conn, `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`)
				continue
			}
			switch req.Execute {
			case "qmp_capabilities":
				negotiated = true
				fmt.Fprintln(conn, `{"return": {}}`)
			case "stop":
				fmt.Fprintln(conn, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`)
				fmt.Fprintln(conn, `{"return": {}}`)
			case "getfd":
				if fd == nil {
					fmt.Fprintln(conn, `{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`)
					continue
				}
				f.gotFD <- fd
				fmt.Fprintln(conn, `{"return": {}}`)
			case "query-migrate":
				f.migrates++
				if f.migrates < 2 {
					fmt.Fprintln(conn, `{"return": {"status": "active"}}`)
				} else {
					fmt.Fprintln(conn, `{"return": {"status": "completed"}}`)
				}
			case "query-status":
				fmt.Fprintln(conn, `{"return": {"status": "paused", "running": false}}`)
			default:
				fmt.Fprintf(conn, `{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`+"\n", req.Execute)
			}
		}
	}()
	return sock, f
}

func TestRawQMP(t *testing.T) {
	sock, f := serveFakeQMP(t)
	ctx := context.Background()
	q, err := Dial(ctx, sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	if err := q.Call(ctx, time.Second, "stop", nil, nil); err != nil {
		t.Fatalf("stop (an event comes first): %v", err)
	}
	var qe *qmpError
	if err := q.Call(ctx, time.Second, "nonsense", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("nonsense: want a CommandNotFound qmpError, got %v", err)
	}
	if err := q.Call(ctx, time.Second, "getfd", map[string]any{"fdname": "x"}, nil); err == nil {
		t.Fatal("getfd without a descriptor: want an error")
	}

	file, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := q.CallFD(ctx, time.Second, "getfd", map[string]any{"fdname": "x"}, nil, int(file.Fd())); err != nil {
		t.Fatalf("getfd: %v", err)
	}
	got := <-f.gotFD
	defer got.Close()
	if _, err := got.WriteString("through the passed fd"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file.Name()); string(b) != "through the passed fd" {
		t.Fatalf("the passed descriptor is not the file: it wrote %q", b)
	}

	if err := q.WaitMigration(ctx, 5*time.Second); err != nil {
		t.Fatalf("waitMigration: %v", err)
	}
	if st, err := q.WaitStatusNot(ctx, "inmigrate", time.Second); err != nil || st != "paused" {
		t.Fatalf("waitStatusNot: %q, %v", st, err)
	}
	if err := q.WaitStatus(ctx, "running", 50*time.Millisecond); err == nil {
		t.Fatal("waitStatus running: want a timeout error, the fake stays paused")
	}
}

func TestRawQMPNoGreeting(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		w := bufio.NewWriter(c)
		w.WriteString(`{"return": {}}` + "\n")
		w.Flush()
		time.Sleep(time.Second)
	}()
	if _, err := Dial(context.Background(), sock, time.Second); err == nil {
		t.Fatal("want an error for a socket that sends no greeting")
	}
}
