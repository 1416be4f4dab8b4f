package rawagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeAgent answers the commands the raw client sends, as qemu-ga does: a file store,
// and guest-exec of processes that exit on their second status poll.
type fakeAgent struct {
	files   map[string][]byte
	handles map[int64]*fakeHandle
	polls   map[int]int
	next    int64
}

type fakeHandle struct {
	path string
	pos  int
}

func serveFakeAgent(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hvbt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qga.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f := &fakeAgent{files: map[string][]byte{}, handles: map[int64]*fakeHandle{}, polls: map[int]int{}}
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			line = bytes.TrimLeft(line, "\xff")
			var req struct {
				Execute   string          `json:"execute"`
				Arguments json.RawMessage `json:"arguments"`
			}
			if err := json.Unmarshal(line, &req); err != nil {
				fmt.Fprintf(conn, `{"error":{"class":"GenericError","desc":"bad json"}}`+"\n")
				continue
			}
			ret, sync := f.answer(req.Execute, req.Arguments)
			b, _ := json.Marshal(ret)
			if sync {
				conn.Write([]byte{0xFF})
			}
			conn.Write(append(b, '\n'))
		}
	}()
	return sock
}

func (f *fakeAgent) answer(cmd string, raw json.RawMessage) (any, bool) {
	var a struct {
		ID     int64  `json:"id"`
		Path   string `json:"path"`
		Handle int64  `json:"handle"`
		Buf    string `json:"buf-b64"`
		Count  int    `json:"count"`
		PID    int    `json:"pid"`
		Arg    []string
	}
	json.Unmarshal(raw, &a)
	ok := func(v any) (any, bool) { return map[string]any{"return": v}, false }
	switch cmd {
	case "guest-sync-delimited":
		return map[string]any{"return": a.ID}, true
	case "guest-ping":
		return ok(map[string]any{})
	case "guest-exec":
		return ok(map[string]int{"pid": 42})
	case "guest-exec-status":
		f.polls[a.PID]++
		if f.polls[a.PID] < 2 {
			return ok(map[string]any{"exited": false})
		}
		return ok(map[string]any{"exited": true, "exitcode": 0, "out-data": base64.StdEncoding.EncodeToString([]byte("abc  /x\n"))})
	case "guest-file-open":
		f.next++
		f.handles[f.next] = &fakeHandle{path: a.Path}
		if _, found := f.files[a.Path]; !found {
			f.files[a.Path] = nil
		}
		return ok(f.next)
	case "guest-file-write":
		h := f.handles[a.Handle]
		b, _ := base64.StdEncoding.DecodeString(a.Buf)
		f.files[h.path] = append(f.files[h.path], b...)
		return ok(map[string]int{"count": len(b)})
	case "guest-file-read":
		h := f.handles[a.Handle]
		data := f.files[h.path][h.pos:]
		data = data[:min(len(data), a.Count)]
		h.pos += len(data)
		return ok(map[string]any{"count": len(data), "buf-b64": base64.StdEncoding.EncodeToString(data), "eof": h.pos == len(f.files[h.path])})
	case "guest-file-close":
		delete(f.handles, a.Handle)
		return ok(map[string]any{})
	}
	return map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": cmd}}, false
}

func TestRawAgent(t *testing.T) {
	sock := serveFakeAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := Dial(ctx, sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Call(ctx, time.Second, "guest-ping", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Call(ctx, time.Second, "guest-nonsense", nil, nil); err == nil {
		t.Error("an error answer must be an error")
	}
	st, err := a.Run(ctx, time.Second, "sha256sum", "/x")
	if err != nil || !st.Exited {
		t.Fatalf("run: %+v, %v", st, err)
	}
	if out, _ := base64.StdEncoding.DecodeString(st.OutData); string(out) != "abc  /x\n" {
		t.Errorf("run output %q", out)
	}

	data := bytes.Repeat([]byte("0123456789"), 250_001) // not a multiple of the chunk
	if err := a.WriteFile(ctx, time.Second, "/tmp/f", data, 1<<20); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err := a.ReadFile(ctx, time.Second, "/tmp/f", out, 1<<20)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("readFile: %d bytes, %v", n, err)
	}
	got, _ := os.ReadFile(out.Name())
	if !bytes.Equal(got, data) {
		t.Error("the file read back differs from the one written")
	}
}
