package qga

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeAgent is a scripted agent on the far end of the socket.
type fakeAgent struct {
	t    *testing.T
	conn net.Conn

	mu   sync.Mutex
	seen []string // commands received, in order
}

type fakeReq struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
}

// syncReply is what a healthy agent sends for guest-sync-delimited.
func syncReply(r fakeReq) string {
	var a struct{ ID int64 }
	json.Unmarshal(r.Arguments, &a)
	return fmt.Sprintf("\xff{\"return\": %d}\n", a.ID)
}

// startAgent serves one connection; handle returns the raw bytes to send
// back for each request ("" for none).
func startAgent(t *testing.T, handle func(a *fakeAgent, r fakeReq) string) (*Client, *fakeAgent) {
	t.Helper()
	dir, err := os.MkdirTemp("", "qgat")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qga.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *fakeAgent, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		a := &fakeAgent{t: t, conn: conn}
		accepted <- a
		a.serve(handle)
	}()
	c, err := Dial(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a := <-accepted
	t.Cleanup(func() { a.conn.Close() })
	return c, a
}

func (a *fakeAgent) serve(handle func(a *fakeAgent, r fakeReq) string) {
	var buf []byte
	b := make([]byte, 64<<10)
	for {
		n, err := a.conn.Read(b)
		if err != nil {
			return
		}
		buf = append(buf, b[:n]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			line := bytes.ReplaceAll(buf[:i], []byte{0xff}, nil) // 0xFF resets the parser
			buf = buf[i+1:]
			var r fakeReq
			if err := json.Unmarshal(line, &r); err != nil {
				a.t.Errorf("fake agent got %q: %v", line, err)
				continue
			}
			a.mu.Lock()
			a.seen = append(a.seen, r.Execute)
			a.mu.Unlock()
			if out := handle(a, r); out != "" {
				a.conn.Write([]byte(out))
			}
		}
	}
}

func (a *fakeAgent) commands() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

// waitFor waits until the agent has received command.
func (a *fakeAgent) waitFor(t *testing.T, command string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if slices.Contains(a.commands(), command) {
			return
		}
	}
	t.Fatalf("agent never received %s", command)
}

// healthy answers sync and ping, and everything else with an empty object.
func healthy(a *fakeAgent, r fakeReq) string {
	if r.Execute == "guest-sync-delimited" {
		return syncReply(r)
	}
	return "{\"return\": {}}\n"
}

// testCtx bounds a call that must not hang; generous, since -race on a loaded
// 2-core machine moves megabytes slowly.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
