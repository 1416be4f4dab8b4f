package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// fakeAgentSession is a session whose guest agent socket is served by
// answer: it gets each command (syncs are answered for it) and returns the
// line to send back, "" for none.
func fakeAgentSession(t *testing.T, answer func(command string) string) *Guest {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvag") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qga.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadBytes('\n')
					if err != nil {
						return
					}
					var req struct {
						Execute   string
						Arguments struct{ ID int64 }
					}
					if json.Unmarshal(bytes.Trim(line, "\xff\n"), &req) != nil {
						continue
					}
					out := ""
					if req.Execute == "guest-sync-delimited" {
						out = fmt.Sprintf("\xff{\"return\": %d}\n", req.Arguments.ID)
					} else {
						out = answer(req.Execute)
					}
					conn.Write([]byte(out))
				}
			}()
		}
	}()
	g := New(Options{VM: testVM{}})
	g.a = &agent{path: sock} // attached without a heartbeat loop
	t.Cleanup(g.Detach)
	return g
}

// testVM is a running VM with every service on.
type testVM struct{}

func (testVM) Name() string           { return "test" }
func (testVM) Running() bool          { return true }
func (testVM) Enabled(string) bool    { return true }
func (testVM) KVP() map[string]string { return map[string]string{"role": "db"} }

// A failed chmod quotes the guest's stderr in its error: made safe first.
func TestChmodErrorQuotesStderrSafely(t *testing.T) {
	stderr := "chmod: changing permissions of '/x': Operation not permitted\x1b]52;c;cm0gLXJmIH4K\x07\n" + strings.Repeat("e", 10<<10)
	ss := fakeAgentSession(t, func(command string) string {
		switch command {
		case "guest-exec":
			return `{"return": {"pid": 42}}` + "\n"
		case "guest-exec-status":
			return fmt.Sprintf(`{"return": {"exited": true, "exitcode": 1, "err-data": %q}}`+"\n", base64.StdEncoding.EncodeToString([]byte(stderr)))
		}
		return `{"return": {}}` + "\n"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := ss.chmod(ctx, "/x", 0o600)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "Operation not permitted") {
		t.Fatalf("chmod = %.300v", err)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\x1b\x07\n") || len(msg) > 1024 {
		t.Errorf("error of %d bytes: %.300q", len(msg), msg)
	}
	t.Logf("%.300v", err)
}
