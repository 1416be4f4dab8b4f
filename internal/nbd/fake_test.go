package nbd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Wire builders, shared by the fake server and the fuzz seeds.

func greeting(flags uint16) []byte {
	b := be.AppendUint64(nil, magicNBD)
	b = be.AppendUint64(b, magicOpt)
	return be.AppendUint16(b, flags)
}

func optReply(opt, typ uint32, data []byte) []byte {
	b := be.AppendUint64(nil, magicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func infoExportData(size uint64, flags uint16) []byte {
	b := be.AppendUint16(nil, infoExport)
	b = be.AppendUint64(b, size)
	return be.AppendUint16(b, flags)
}

func infoBlockSizeData(lo, pref, hi uint32) []byte {
	b := be.AppendUint16(nil, infoBlockSize)
	b = be.AppendUint32(b, lo)
	b = be.AppendUint32(b, pref)
	return be.AppendUint32(b, hi)
}

func metaContextData(id uint32, name string) []byte {
	return append(be.AppendUint32(nil, id), name...)
}

func chunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	return append(chunkHeader(flags, typ, handle, uint32(len(payload))), payload...)
}

func chunkHeader(flags, typ uint16, handle uint64, length uint32) []byte {
	b := be.AppendUint32(nil, magicStructured)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	return be.AppendUint32(b, length)
}

func simpleReply(errno uint32, handle uint64) []byte {
	b := be.AppendUint32(nil, magicSimple)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, handle)
}

func dataChunk(flags uint16, handle, off uint64, data []byte) []byte {
	return chunk(flags, chunkOffsetData, handle, append(be.AppendUint64(nil, off), data...))
}

func holeChunk(flags uint16, handle, off uint64, n uint32) []byte {
	return chunk(flags, chunkOffsetHole, handle, be.AppendUint32(be.AppendUint64(nil, off), n))
}

func errorChunk(flags uint16, handle uint64, errno uint32, msg string) []byte {
	p := be.AppendUint32(nil, errno)
	p = be.AppendUint16(p, uint16(len(msg)))
	return chunk(flags, chunkError, handle, append(p, msg...))
}

func statusChunk(flags uint16, handle uint64, id uint32, ext ...uint32) []byte {
	p := be.AppendUint32(nil, id)
	for _, e := range ext {
		p = be.AppendUint32(p, e)
	}
	return chunk(flags, chunkBlockStatus, handle, p)
}

func noneChunk(handle uint64) []byte { return chunk(replyFlagDone, chunkNone, handle, nil) }

// socketPair is a connected pair of unix stream sockets, buffered like a real
// connection (net.Pipe is not).
func socketPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client, server = conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// request is a transmission request as the fake server reads it.
type request struct {
	flags, typ uint16
	handle     uint64
	off        uint64
	length     uint32
}

// fake is a scripted NBD server on one end of a socket pair. The handshake
// and the default request handling model a small disk; tests replace parts.
type fake struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader

	export     string
	size       uint64
	tflags     uint16
	contexts   []string                           // contexts the server can select
	blockSize  []uint32                           // NBD_INFO_BLOCK_SIZE to send, if set
	hsFlags    uint16                             // handshake flags
	noStruct   bool                               // refuse structured replies
	noGo       bool                               // refuse NBD_OPT_GO (old server)
	onOption   func(opt uint32, data []byte) bool // handles an option itself when it returns true
	disk       []byte                             // contents for reads
	extents    map[string][]Extent
	onRequest  func(req request) bool // handles a request itself when it returns true
	chunkSize  int                    // split read replies; default 4096
	structured bool
	selected   map[uint32]string
	done       chan struct{}

	mu       sync.Mutex // guards what tests inspect:
	requests []request  // seen
	gotAbort bool
	gotDisc  bool
}

// seen returns the requests the server received.
func (f *fake) seen() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// wait waits for the server to end (the client hung up or said goodbye).
func (f *fake) wait() {
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		f.t.Fatal("fake server did not stop")
	}
}

func newFake(t testing.TB, size int) *fake {
	disk := make([]byte, size)
	return &fake{t: t, export: "e", size: uint64(size), tflags: uint16(FlagHasFlags | FlagReadOnly),
		hsFlags: flagFixedNewstyle | flagNoZeroes, disk: disk, extents: map[string][]Extent{}, chunkSize: 4096}
}

func (f *fake) write(b ...[]byte) {
	_, _ = f.conn.Write(bytes.Join(b, nil))
}

func (f *fake) readN(n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(f.r, b)
	return b, err
}

// start serves conn in a goroutine and returns a client connected to it.
func (f *fake) start(opts Options) (*Client, error) {
	cc, sc := socketPair(f.t)
	f.conn, f.r = sc, bufio.NewReader(sc)
	f.done = make(chan struct{})
	done := f.done
	go func() {
		defer close(done)
		defer sc.Close()
		if f.handshake() {
			f.serve()
		}
	}()
	f.t.Cleanup(func() {
		sc.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			f.t.Error("fake server did not stop")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return NewClient(ctx, cc, opts)
}

// handshake plays the server's side; false when the session ended.
func (f *fake) handshake() bool {
	f.write(greeting(f.hsFlags))
	cf, err := f.readN(4)
	if err != nil {
		return false
	}
	noZeroes := be.Uint32(cf)&cflagNoZeroes != 0
	f.selected = map[uint32]string{}
	for {
		hdr, err := f.readN(16)
		if err != nil {
			return false
		}
		if be.Uint64(hdr) != magicOpt {
			f.t.Errorf("option magic %#x", be.Uint64(hdr))
			return false
		}
		opt := be.Uint32(hdr[8:])
		data, err := f.readN(int(be.Uint32(hdr[12:])))
		if err != nil {
			return false
		}
		if f.onOption != nil && f.onOption(opt, data) {
			continue
		}
		switch opt {
		case optAbort:
			f.mu.Lock()
			f.gotAbort = true
			f.mu.Unlock()
			f.write(optReply(opt, repAck, nil))
			return false
		case optStructured:
			if f.noStruct {
				f.write(optReply(opt, repErrUnsup, nil))
				continue
			}
			f.structured = true
			f.write(optReply(opt, repAck, nil))
		case optSetMetaContext:
			nl := be.Uint32(data)
			name := string(data[4 : 4+nl])
			rest := data[4+nl:]
			if name != f.export {
				f.write(optReply(opt, repErrUnknown, []byte("export '"+name+"' not present")))
				continue
			}
			n := be.Uint32(rest)
			rest = rest[4:]
			var out [][]byte
			for i := uint32(0); i < n; i++ {
				ql := be.Uint32(rest)
				q := string(rest[4 : 4+ql])
				rest = rest[4+ql:]
				if slices.Contains(f.contexts, q) {
					id := uint32(len(f.selected) + 7)
					f.selected[id] = q
					out = append(out, optReply(opt, repMetaContext, metaContextData(id, q)))
				}
			}
			f.write(append(out, optReply(opt, repAck, nil))...)
		case optGo:
			if f.noGo {
				f.write(optReply(opt, repErrUnsup, nil))
				continue
			}
			nl := be.Uint32(data)
			if name := string(data[4 : 4+nl]); name != f.export {
				f.write(optReply(opt, repErrUnknown, []byte("export '"+name+"' not present")))
				continue
			}
			var out [][]byte
			if f.blockSize != nil {
				out = append(out, optReply(opt, repInfo, infoBlockSizeData(f.blockSize[0], f.blockSize[1], f.blockSize[2])))
			}
			out = append(out, optReply(opt, repInfo, infoExportData(f.size, f.tflags)), optReply(opt, repAck, nil))
			f.write(out...)
			return true
		case optExportName:
			if string(data) != f.export {
				return false
			}
			b := be.AppendUint64(nil, f.size)
			b = be.AppendUint16(b, f.tflags)
			if !noZeroes {
				b = append(b, make([]byte, 124)...)
			}
			f.write(b)
			return true
		default:
			f.write(optReply(opt, repErrUnsup, nil))
		}
	}
}

// replyWith makes an onOption hook that answers opt with raw bytes.
func (f *fake) replyWith(opt uint32, b ...[]byte) func(uint32, []byte) bool {
	return func(o uint32, _ []byte) bool {
		if o != opt {
			return false
		}
		f.write(b...)
		return true
	}
}

func (f *fake) serve() {
	for {
		b, err := f.readN(28)
		if err != nil {
			return
		}
		if be.Uint32(b) != magicRequest {
			f.t.Errorf("request magic %#x", be.Uint32(b))
			return
		}
		req := request{flags: be.Uint16(b[4:]), typ: be.Uint16(b[6:]), handle: be.Uint64(b[8:]), off: be.Uint64(b[16:]), length: be.Uint32(b[24:])}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.mu.Unlock()
		if f.onRequest != nil && f.onRequest(req) {
			continue
		}
		switch req.typ {
		case cmdDisc:
			f.mu.Lock()
			f.gotDisc = true
			f.mu.Unlock()
			return
		case cmdRead:
			f.read(req)
		case cmdBlockStatus:
			f.status(req)
		default:
			f.write(simpleReply(errnoInval, req.handle))
		}
	}
}

// read answers with data and hole chunks of chunkSize, last chunk first.
func (f *fake) read(req request) {
	if req.off+uint64(req.length) > f.size {
		f.write(errorChunk(replyFlagDone, req.handle, errnoInval, "out of range"))
		return
	}
	if !f.structured {
		f.write(simpleReply(0, req.handle), f.disk[req.off:req.off+uint64(req.length)])
		return
	}
	var chunks [][]byte
	for at := req.off; at < req.off+uint64(req.length); {
		n := min(uint64(f.chunkSize), req.off+uint64(req.length)-at)
		if p := f.disk[at : at+n]; bytes.Count(p, []byte{0}) == len(p) {
			chunks = append(chunks, holeChunk(0, req.handle, at, uint32(n)))
		} else {
			chunks = append(chunks, dataChunk(0, req.handle, at, p))
		}
		at += n
	}
	slices.Reverse(chunks)
	f.write(append(chunks, noneChunk(req.handle))...)
}

// status answers for every selected context from f.extents.
func (f *fake) status(req request) {
	var chunks [][]byte
	for id, name := range f.selected {
		var ext []uint32
		end := req.off + uint64(req.length)
		for _, e := range f.extents[name] {
			lo, hi := max(uint64(e.Offset), req.off), min(uint64(e.End()), end)
			if lo < hi {
				ext = append(ext, uint32(hi-lo), e.Flags)
			}
		}
		chunks = append(chunks, statusChunk(0, req.handle, id, ext...))
	}
	f.write(append(chunks, noneChunk(req.handle))...)
}

// fakeConn is a net.Conn that reads a fixed byte string and swallows writes,
// for fuzzing the handshake.
type fakeConn struct{ r io.Reader }

func (c *fakeConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *fakeConn) Close() error                       { return nil }
func (c *fakeConn) LocalAddr() net.Addr                { return &net.UnixAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr               { return &net.UnixAddr{} }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
