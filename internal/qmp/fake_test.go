package qmp

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testGreeting = `{"QMP": {"version": {"qemu": {"micro": 1, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}`

// fakeQEMU is the server side of one QMP connection, driven by the test.
type fakeQEMU struct {
	t    *testing.T
	conn *net.UnixConn
	buf  []byte
	oob  []byte
}

type fakeCmd struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// listenFake listens on a fresh socket and returns its path and a channel
// that yields the server side of the first connection after serve ran.
func listenFake(t *testing.T, serve func(f *fakeQEMU)) (string, <-chan *fakeQEMU) {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmpt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ready := make(chan *fakeQEMU, 1)
	go func() {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		f := &fakeQEMU{t: t, conn: conn}
		t.Cleanup(func() { conn.Close() })
		serve(f)
		ready <- f
	}()
	return path, ready
}

// standardHandshake greets and accepts qmp_capabilities.
func standardHandshake(f *fakeQEMU) {
	f.send(testGreeting)
	if cmd, _ := f.read(); cmd.Execute != "qmp_capabilities" {
		f.t.Errorf("first command = %q, want qmp_capabilities", cmd.Execute)
	}
	f.send(`{"return": {}, "id": "caps"}`)
}

func (f *fakeQEMU) send(line string) {
	if _, err := f.conn.Write([]byte(line + "\n")); err != nil {
		f.t.Errorf("fake write: %v", err)
	}
}

// read returns the next command and any control data that came with it.
func (f *fakeQEMU) read() (fakeCmd, []byte) {
	f.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
			line := f.buf[:i]
			f.buf = f.buf[i+1:]
			var c fakeCmd
			if err := json.Unmarshal(line, &c); err != nil {
				f.t.Errorf("fake got bad JSON %q: %v", line, err)
			}
			oob := f.oob
			f.oob = nil
			return c, oob
		}
		b := make([]byte, 4096)
		oob := make([]byte, 256)
		n, oobn, _, _, err := f.conn.ReadMsgUnix(b, oob)
		if err != nil {
			return fakeCmd{}, nil
		}
		f.buf = append(f.buf, b[:n]...)
		f.oob = append(f.oob, oob[:oobn]...)
	}
}

func (f *fakeQEMU) answer(id json.RawMessage, ret string) {
	f.send(`{"return": ` + ret + `, "id": ` + string(id) + `}`)
}
