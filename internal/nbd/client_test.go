package nbd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantErr checks err's kind and that its text contains each of words.
func wantErr(t *testing.T, err error, kind error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one of kind %v containing %q", kind, words)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Errorf("error %q is not of kind %v", err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// testDisk is 64 KiB: data in [0,4K) and [16K,20K), zeroes elsewhere.
func testDisk() []byte {
	d := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for _, rg := range [][2]int{{0, 4 << 10}, {16 << 10, 20 << 10}} {
		for i := rg[0]; i < rg[1]; i++ {
			d[i] = byte(r.IntN(255) + 1)
		}
	}
	return d
}

func TestReadAndBlockStatus(t *testing.T) {
	ctx := testCtx(t)
	f := newFake(t, 64<<10)
	f.disk = testDisk()
	f.contexts = []string{BaseAllocation, DirtyBitmap("b0")}
	f.extents[BaseAllocation] = []Extent{{0, 4096, 0}, {4096, 12288, StateHole | StateZero}, {16384, 4096, 0}, {20480, 45056, StateHole | StateZero}}
	f.extents[DirtyBitmap("b0")] = []Extent{{0, 16384, 0}, {16384, 4096, StateDirty}, {20480, 45056, 0}}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation, DirtyBitmap("b0")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exp := c.Export()
	if exp.Size != 64<<10 || !exp.Flags.ReadOnly() || !exp.Structured || exp.MinBlock != 1 || exp.MaxPayload != 32<<20 ||
		!reflect.DeepEqual(exp.MetaContexts, []string{BaseAllocation, DirtyBitmap("b0")}) || exp.Name != "e" {
		t.Errorf("export %+v", exp)
	}

	// The fake answers in 4 KiB chunks, last first, holes as hole chunks.
	got, err := c.Read(ctx, 0, 64<<10)
	if err != nil || !bytes.Equal(got, f.disk) {
		t.Fatalf("whole read: %v, equal %v", err, bytes.Equal(got, f.disk))
	}
	got, err = c.Read(ctx, 4000, 12500)
	if err != nil || !bytes.Equal(got, f.disk[4000:16500]) {
		t.Fatalf("unaligned read: %v", err)
	}
	p := bytes.Repeat([]byte{0xEE}, 8192)
	if err := c.ReadInto(ctx, p, 6000); err != nil || !bytes.Equal(p, f.disk[6000:14192]) {
		t.Fatalf("read into a dirty buffer over a hole: %v", err)
	}
	if got, err := c.Read(ctx, 64<<10, 0); err != nil || len(got) != 0 {
		t.Fatalf("empty read at the end: %q, %v", got, err)
	}
	n := len(f.seen())
	_, err = c.Read(ctx, 60<<10, 8<<10)
	wantErr(t, err, errdefs.ErrInvalid, "read of 8192 bytes at offset 61440 is outside export \"e\" of 65536 bytes")
	_, err = c.Read(ctx, -1, 1)
	wantErr(t, err, errdefs.ErrInvalid, "outside")
	if len(f.seen()) != n {
		t.Error("a request outside the export was sent")
	}

	exts, err := c.BlockStatus(ctx, 1000, 20000, BaseAllocation)
	if want := []Extent{{1000, 3096, 0}, {4096, 12288, 3}, {16384, 4096, 0}, {20480, 520, 3}}; err != nil || !reflect.DeepEqual(exts, want) {
		t.Errorf("BlockStatus = %v, %v; want %v", exts, err, want)
	}
	all, err := c.Extents(ctx, BaseAllocation)
	if err != nil || !reflect.DeepEqual(all, f.extents[BaseAllocation]) {
		t.Errorf("Extents(base) = %v, %v", all, err)
	}
	dirty, err := c.Extents(ctx, DirtyBitmap("b0"))
	if err != nil || !reflect.DeepEqual(Select(dirty, StateDirty, StateDirty), []Extent{{16384, 4096, 1}}) {
		t.Errorf("Extents(bitmap) = %v, %v", dirty, err)
	}
	if data := Select(all, StateZero, 0); !reflect.DeepEqual(data, []Extent{{0, 4096, 0}, {16384, 4096, 0}}) {
		t.Errorf("Select data = %v", data)
	}
	_, err = c.BlockStatus(ctx, 0, 1, AllocationDepth)
	wantErr(t, err, errdefs.ErrInvalid, `"qemu:allocation-depth" was not negotiated`, "Options.MetaContexts")

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f.wait()
	f.mu.Lock()
	disc := f.gotDisc
	f.mu.Unlock()
	if !disc {
		t.Error("Close did not send NBD_CMD_DISC")
	}
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrUnavailable, "client was closed")
}

// A server may answer a prefix of the range; WalkExtents asks again and merges.
func TestWalkExtentsMergesAcrossRequests(t *testing.T) {
	ctx := testCtx(t)
	f := newFake(t, 1<<20)
	f.contexts = []string{DirtyBitmap("b")}
	var ext []Extent
	for off := int64(0); off < 1<<20; off += 64 << 10 {
		flags := uint32(0)
		if off >= 256<<10 && off < 512<<10 {
			flags = StateDirty
		}
		ext = append(ext, Extent{off, 64 << 10, flags})
	}
	f.extents[DirtyBitmap("b")] = ext
	f.onRequest = func(req request) bool { // one extent per reply
		if req.typ != cmdBlockStatus {
			return false
		}
		f.write(statusChunk(replyFlagDone, req.handle, 7, 64<<10, ext[req.off/(64<<10)].Flags))
		return true
	}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{DirtyBitmap("b")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Extents(ctx, DirtyBitmap("b"))
	if want := []Extent{{0, 256 << 10, 0}, {256 << 10, 256 << 10, 1}, {512 << 10, 512 << 10, 0}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Extents = %v, %v; want %v", got, err, want)
	}
	if n := len(f.seen()); n != 16 {
		t.Errorf("%d requests, want 16", n)
	}
	stop := errors.New("stop")
	calls := 0
	err = c.WalkExtents(ctx, DirtyBitmap("b"), 0, 1<<20, func(Extent) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("WalkExtents with a failing callback: %v after %d calls", err, calls)
	}
}

func TestBlockSizesAlignAndSplitRequests(t *testing.T) {
	ctx := testCtx(t)
	f := newFake(t, 64<<10+100) // not a multiple of the block size
	f.disk = append(testDisk(), bytes.Repeat([]byte{7}, 100)...)
	f.blockSize = []uint32{512, 4096, 8192}
	f.contexts = []string{BaseAllocation}
	f.extents[BaseAllocation] = []Extent{{0, 64<<10 + 100, 0}}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if e := c.Export(); e.MinBlock != 512 || e.PreferredBlock != 4096 || e.MaxPayload != 8192 {
		t.Errorf("block sizes %+v", e)
	}
	cases := []struct {
		off, n int
		reqs   [][2]uint64
	}{
		{1000, 100, [][2]uint64{{512, 1024}}},
		{0, 20000, [][2]uint64{{0, 8192}, {8192, 8192}, {16384, 4096}}},
		{8191, 2, [][2]uint64{{7680, 1024}}},
		{1000, 10000, [][2]uint64{{512, 8192}, {8704, 2560}}},
		{64<<10 + 10, 90, [][2]uint64{{64 << 10, 100}}}, // the unaligned end
	}
	for _, tc := range cases {
		before := len(f.seen())
		got, err := c.Read(ctx, int64(tc.off), tc.n)
		if err != nil || !bytes.Equal(got, f.disk[tc.off:tc.off+tc.n]) {
			t.Fatalf("read %d at %d: %v", tc.n, tc.off, err)
		}
		var reqs [][2]uint64
		for _, r := range f.seen()[before:] {
			reqs = append(reqs, [2]uint64{r.off, uint64(r.length)})
		}
		if !reflect.DeepEqual(reqs, tc.reqs) {
			t.Errorf("read %d at %d sent %v, want %v", tc.n, tc.off, reqs, tc.reqs)
		}
	}
	exts, err := c.BlockStatus(ctx, 1000, 100, BaseAllocation)
	if err != nil || !reflect.DeepEqual(exts, []Extent{{1000, 100, 0}}) {
		t.Errorf("BlockStatus = %v, %v", exts, err)
	}
	if r := f.seen()[len(f.seen())-1]; r.off != 512 || r.length != 1024 {
		t.Errorf("block status request %+v, want 512+1024", r)
	}
}

func TestOldServers(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		name             string
		noStruct, noGo   bool
		hsFlags          uint16
		wantStructured   bool
		wantBlockSizeDef bool
	}{
		{"no structured replies", true, false, flagFixedNewstyle | flagNoZeroes, false, true},
		{"no NBD_OPT_GO", false, true, flagFixedNewstyle | flagNoZeroes, true, true},
		{"no NBD_OPT_GO, with zeroes", true, true, flagFixedNewstyle, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, 64<<10)
			f.disk = testDisk()
			f.noStruct, f.noGo, f.hsFlags = tc.noStruct, tc.noGo, tc.hsFlags
			c, err := f.start(Options{Export: "e"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if e := c.Export(); e.Size != 64<<10 || e.Structured != tc.wantStructured || e.MinBlock != 1 {
				t.Errorf("export %+v", e)
			}
			got, err := c.Read(ctx, 100, 20000)
			if err != nil || !bytes.Equal(got, f.disk[100:20100]) {
				t.Fatalf("read: %v", err)
			}
			_, err = c.BlockStatus(ctx, 0, 1, BaseAllocation)
			wantErr(t, err, errdefs.ErrInvalid, "not negotiated")
		})
	}
	f := newFake(t, 4096)
	f.noStruct = true
	_, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation}})
	wantErr(t, err, errdefs.ErrUnavailable, "does not support structured replies")
}

func TestServerErrors(t *testing.T) {
	ctx := testCtx(t)
	f := newFake(t, 64<<10)
	f.disk = testDisk()
	f.contexts = []string{BaseAllocation}
	f.extents[BaseAllocation] = []Extent{{0, 64 << 10, 0}}
	replies := make(chan func(h uint64) []byte, 1) // the next request's answer, if not the default
	f.onRequest = func(req request) bool {
		select {
		case reply := <-replies:
			f.write(reply(req.handle))
			return true
		default:
			return false
		}
	}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	replies <- func(h uint64) []byte {
		return bytes.Join([][]byte{
			dataChunk(0, h, 0, f.disk[:100]),
			errorChunk(0, h, errnoIO, "disk on fire\n"),
			holeChunk(replyFlagDone, h, 100, 100),
		}, nil)
	}
	_, err = c.Read(ctx, 0, 4096)
	wantErr(t, err, errdefs.ErrUnavailable, "read of 4096 bytes at offset 0 failed on the server: EIO (5): disk on fire;", "check its log")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Errno != errnoIO || ce.Message != "disk on fire" || ce.At != -1 {
		t.Errorf("CommandError %+v", ce)
	}
	// The stream stayed in step: the connection is still good.
	if got, err := c.Read(ctx, 0, 4096); err != nil || !bytes.Equal(got, f.disk[:4096]) {
		t.Fatalf("read after a server error: %v", err)
	}
	replies <- func(h uint64) []byte {
		p := be.AppendUint32(nil, errnoInval)
		p = be.AppendUint16(p, 3)
		p = append(p, "bad"...)
		p = be.AppendUint64(p, 10)
		return chunk(replyFlagDone, chunkErrorOffset, h, p)
	}
	_, err = c.BlockStatus(ctx, 0, 4096, BaseAllocation)
	wantErr(t, err, errdefs.ErrInvalid, "block status of 4096 bytes at offset 0 failed on the server: EINVAL (22) at offset 10: bad")
	replies <- func(h uint64) []byte { return simpleReply(errnoPerm, h) }
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrConflict, "EPERM (1)")
	replies <- func(h uint64) []byte { // an unknown error type still reads as an error
		p := be.AppendUint32(nil, 99)
		p = be.AppendUint16(p, 0)
		p = append(p, 1, 2, 3)
		return chunk(replyFlagDone, chunkErrorBit+77, h, p)
	}
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrUnavailable, "error 99")
	if _, err := c.Read(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}

	// ESHUTDOWN: the client says goodbye and gives the connection up.
	replies <- func(h uint64) []byte { return errorChunk(replyFlagDone, h, errnoShutdown, "") }
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrUnavailable, "ESHUTDOWN (108)", "shutting down")
	f.wait()
	f.mu.Lock()
	disc := f.gotDisc
	f.mu.Unlock()
	if !disc {
		t.Error("no NBD_CMD_DISC after ESHUTDOWN")
	}
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrUnavailable, "given up", "dial again")
}

// Each hostile or broken reply is a clear protocol error, after which the
// client has hung up; nothing panics and nothing huge is allocated.
func TestHostileReadReplies(t *testing.T) {
	const off, n = 4096, 8192
	data := bytes.Repeat([]byte{1}, n)
	u32 := func(v uint32) []byte { return be.AppendUint32(nil, v) }
	cases := []struct {
		name  string
		reply func(h uint64) []byte
		want  string
	}{
		{"data before the request", func(h uint64) []byte { return dataChunk(replyFlagDone, h, 0, data) }, "outside the read of 8192 bytes at 4096"},
		{"data past the request", func(h uint64) []byte { return dataChunk(replyFlagDone, h, off+1, data) }, "outside the read"},
		{"data chunk too long", func(h uint64) []byte { return dataChunk(replyFlagDone, h, off, append(data, 0)) }, "a data chunk of 8201 bytes in reply to a read of 8192"},
		{"offset overflow", func(h uint64) []byte { return dataChunk(replyFlagDone, h, 1<<64-1, data[:2]) }, "outside the read"},
		{"huge chunk length", func(h uint64) []byte { return chunkHeader(replyFlagDone, chunkOffsetData, h, 1<<32-1) }, "a data chunk of 4294967295 bytes"},
		{"overlap", func(h uint64) []byte {
			return append(dataChunk(0, h, off, data[:4096]), dataChunk(replyFlagDone, h, off+2048, data[:4096])...)
		}, "overlaps an earlier one"},
		{"overlap out of order", func(h uint64) []byte {
			return bytes.Join([][]byte{holeChunk(0, h, off+6000, 100), dataChunk(0, h, off, data[:100]), holeChunk(replyFlagDone, h, off+50, 6000)}, nil)
		}, "overlaps"},
		{"short", func(h uint64) []byte { return dataChunk(replyFlagDone, h, off, data[:100]) }, "success for a read of 8192 bytes at offset 4096 after sending 100"},
		{"gap", func(h uint64) []byte {
			return append(dataChunk(0, h, off, data[:100]), holeChunk(replyFlagDone, h, off+200, n-200)...)
		}, "after sending 8092"},
		{"empty hole", func(h uint64) []byte { return holeChunk(replyFlagDone, h, off, 0) }, "hole chunk of 0 bytes"},
		{"huge hole", func(h uint64) []byte { return holeChunk(replyFlagDone, h, off, 1<<32-1) }, "outside the read"},
		{"hole length", func(h uint64) []byte { return chunk(replyFlagDone, chunkOffsetHole, h, make([]byte, 16)) }, "hole chunk of 16 bytes"},
		{"wrong handle", func(h uint64) []byte { return dataChunk(replyFlagDone, h+1, off, data) }, "while only"},
		{"bad magic", func(h uint64) []byte { return bytes.Repeat([]byte{0xff}, 20) }, "0xffffffff, not a reply magic"},
		{"unknown type", func(h uint64) []byte { return chunk(replyFlagDone, 3, h, nil) }, "a chunk of type 3 in reply to a read"},
		{"block status to a read", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 7, n, 0) }, "type 5"},
		{"none not done", func(h uint64) []byte { return chunk(0, chunkNone, h, nil) }, "must be empty and final"},
		{"none with data", func(h uint64) []byte { return chunk(replyFlagDone, chunkNone, h, []byte{1}) }, "must be empty and final"},
		{"error message overrun", func(h uint64) []byte {
			return chunk(replyFlagDone, chunkError, h, append(u32(errnoIO), 0, 100, 'x', 'y'))
		}, "error message of 100 bytes in an error chunk of 8"},
		{"error value 0", func(h uint64) []byte { return errorChunk(replyFlagDone, h, 0, "") }, "error value 0"},
		{"error chunk too short", func(h uint64) []byte { return chunk(replyFlagDone, chunkError, h, u32(5)) }, "error chunk of 4 bytes"},
		{"error offset outside", func(h uint64) []byte {
			p := append(u32(errnoIO), 0, 0)
			return chunk(replyFlagDone, chunkErrorOffset, h, be.AppendUint64(p, 1))
		}, "an error at offset 1, outside the request"},
		{"error offset short", func(h uint64) []byte {
			return chunk(replyFlagDone, chunkErrorOffset, h, append(u32(errnoIO), 0, 0, 1, 2))
		}, "NBD_REPLY_TYPE_ERROR_OFFSET with 2 bytes after its message"},
		{"simple reply without error", func(h uint64) []byte { return simpleReply(0, h) }, "simple reply without error to a read"},
		{"simple reply mid-reply", func(h uint64) []byte { return append(dataChunk(0, h, off, data[:10]), simpleReply(5, h)...) }, "in the middle"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFake(t, 64<<10)
			f.onRequest = func(req request) bool {
				f.write(tc.reply(req.handle))
				return true
			}
			c, err := f.start(Options{Export: "e"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Read(ctx, off, n)
			wantErr(t, err, ErrProtocol, "nbd: read of 8192 bytes at offset 4096: ", tc.want, "the server broke the NBD protocol; the connection is closed")
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("%v is not ErrUnavailable", err)
			}
			_, err = c.Read(ctx, 0, 1)
			wantErr(t, err, errdefs.ErrUnavailable, "given up after an earlier failure", tc.want)
			f.wait() // the client hung up
			if len(f.seen()) != 1 {
				t.Errorf("%d requests sent", len(f.seen()))
			}
		})
	}
}

func TestHostileStatusReplies(t *testing.T) {
	const n = 8192
	cases := []struct {
		name  string
		reply func(h uint64) []byte
		want  string
	}{
		{"unknown context", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 99, n, 0) }, "context id 99, which the server never selected"},
		{"twice", func(h uint64) []byte {
			return append(statusChunk(0, h, 7, n, 0), statusChunk(replyFlagDone, h, 7, n, 0)...)
		}, `two block status chunks for "base:allocation"`},
		{"empty extent", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 7, 0, 0) }, "an extent of 0 bytes"},
		{"past the range", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 7, n, 0, 1, 0) }, "go on past the 8192 bytes"},
		{"no extents", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 7) }, "block status chunk of 4 bytes"},
		{"odd length", func(h uint64) []byte { return chunk(replyFlagDone, chunkBlockStatus, h, make([]byte, 14)) }, "block status chunk of 14 bytes"},
		{"huge", func(h uint64) []byte { return chunkHeader(replyFlagDone, chunkBlockStatus, h, 4+8*(maxExtentsChunk+1)) }, "block status chunk of 8388620 bytes"},
		{"lacks the context", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 8, n, 1) }, `lacks "base:allocation"`},
		{"data chunk", func(h uint64) []byte { return dataChunk(replyFlagDone, h, 0, []byte{1}) }, "type 1 in reply to block status"},
		{"simple without error", func(h uint64) []byte { return simpleReply(0, h) }, "simple reply without error to block status"},
		{"not structured", func(h uint64) []byte { return statusChunk(replyFlagDone, h, 7, n, 0)[:19] }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			f := newFake(t, 64<<10)
			f.contexts = []string{BaseAllocation, DirtyBitmap("b")}
			f.onRequest = func(req request) bool {
				f.write(tc.reply(req.handle))
				if tc.name == "not structured" {
					f.conn.Close() // a truncated chunk: the connection is lost
				}
				return true
			}
			c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation, DirtyBitmap("b")}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.BlockStatus(ctx, 0, n, BaseAllocation)
			if tc.name == "not structured" {
				wantErr(t, err, errdefs.ErrUnavailable, "connection to the NBD server lost")
				return
			}
			wantErr(t, err, ErrProtocol, tc.want, "the connection is closed")
		})
	}

	// The last extent may reach past the range: it is cut. Other contexts'
	// chunks are checked and dropped.
	ctx := testCtx(t)
	f := newFake(t, 64<<10)
	f.contexts = []string{BaseAllocation, DirtyBitmap("b")}
	f.onRequest = func(req request) bool {
		f.write(statusChunk(0, req.handle, 8, 100, 1), statusChunk(0, req.handle, 7, 4096, 1, 1<<20, 0), noneChunk(req.handle))
		return true
	}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation, DirtyBitmap("b")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exts, err := c.BlockStatus(ctx, 0, n, BaseAllocation)
	if err != nil || !reflect.DeepEqual(exts, []Extent{{0, 4096, 1}, {4096, 4096, 0}}) {
		t.Errorf("BlockStatus = %v, %v", exts, err)
	}
	exts, err = c.BlockStatus(ctx, 0, n, DirtyBitmap("b"))
	if err != nil || !reflect.DeepEqual(exts, []Extent{{0, 100, 1}}) {
		t.Errorf("BlockStatus = %v, %v", exts, err)
	}
}

func TestHandshakeErrors(t *testing.T) {
	base := []string{BaseAllocation}
	cases := []struct {
		name      string
		setup     func(f *fake)
		opts      Options
		kind      error
		want      []string
		wantAbort bool
	}{
		{name: "unknown export", opts: Options{Export: "nope"}, kind: errdefs.ErrNotFound, wantAbort: true,
			want: []string{`nbd: export "nope" not found on the server (NBD_REP_ERR_UNKNOWN: export 'nope' not present); list the server's exports`}},
		{name: "unknown export with contexts", opts: Options{Export: "nope", MetaContexts: base}, kind: errdefs.ErrNotFound, wantAbort: true,
			want: []string{`export "nope" not found`, "NBD_REP_ERR_UNKNOWN"}},
		{name: "missing bitmap", opts: Options{Export: "e", MetaContexts: []string{BaseAllocation, DirtyBitmap("b0")}},
			setup: func(f *fake) { f.contexts = base }, kind: errdefs.ErrNotFound, wantAbort: true,
			want: []string{`did not select metadata context "qemu:dirty-bitmap:b0" for export "e"`, "qemu-nbd -B b0"}},
		{name: "missing depth", opts: Options{Export: "e", MetaContexts: []string{AllocationDepth}}, kind: errdefs.ErrNotFound, wantAbort: true,
			want: []string{"qemu-nbd -A"}},
		{name: "TLS required", opts: Options{Export: "e"}, kind: errdefs.ErrUnavailable, wantAbort: true,
			setup: func(f *fake) {
				f.onOption = func(opt uint32, data []byte) bool {
					if opt == optAbort {
						return false
					}
					f.write(optReply(opt, repErrTLSReqd, []byte("TLS negotiation required before option 8")))
					return true
				}
			},
			want: []string{"the server refused structured replies (NBD_REP_ERR_TLS_REQD: TLS negotiation required", "dial with Options.TLS set"}},
		{name: "TLS refused", opts: Options{Export: "e", TLS: &tls.Config{ServerName: "x"}}, kind: errdefs.ErrUnavailable, wantAbort: true,
			want: []string{"the server refused TLS (NBD_REP_ERR_UNSUP)", "dial without Options.TLS"}},
		{name: "shutting down", opts: Options{Export: "e"}, kind: errdefs.ErrUnavailable, wantAbort: true,
			setup: func(f *fake) {
				f.onOption = func(opt uint32, data []byte) bool {
					if opt != optGo {
						return false
					}
					f.write(optReply(opt, repErrShutdown, nil))
					return true
				}
			},
			want: []string{`the server refused export "e" (NBD_REP_ERR_SHUTDOWN); the server is shutting down`}},
		{name: "echo mismatch", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.onOption = f.replyWith(optStructured, optReply(optGo, repAck, nil)) },
			want:  []string{"answered NBD_OPT_GO to our NBD_OPT_STRUCTURED_REPLY"}},
		{name: "huge option reply", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) {
				f.onOption = f.replyWith(optStructured, optReply(optStructured, repAck, nil)[:16], be.AppendUint32(nil, 1<<30))
			},
			want: []string{"NBD_REP_ACK to NBD_OPT_STRUCTURED_REPLY claims 1073741824 bytes"}},
		{name: "ack with data", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.onOption = f.replyWith(optStructured, optReply(optStructured, repAck, []byte{1})) },
			want:  []string{"NBD_REP_ACK to NBD_OPT_STRUCTURED_REPLY carries 1 bytes"}},
		{name: "go without size", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.onOption = f.replyWith(optGo, optReply(optGo, repAck, nil)) },
			want:  []string{"NBD_OPT_GO accepted without the export's size"}},
		{name: "bad block sizes", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.blockSize = []uint32{3, 4096, 1 << 20} },
			want:  []string{"invalid block sizes: minimum 3, preferred 4096, maximum 1048576"}},
		{name: "max below min", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.blockSize = []uint32{4096, 4096, 512} },
			want:  []string{"invalid block sizes"}},
		{name: "huge size", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.size = 1 << 63 },
			want:  []string{"export size 9223372036854775808 is beyond"}},
		{name: "short info", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) {
				f.onOption = f.replyWith(optGo, optReply(optGo, repInfo, infoExportData(1, 1)[:11]))
			},
			want: []string{"NBD_INFO_EXPORT of 11 bytes"}},
		{name: "unknown reply type", opts: Options{Export: "e"}, kind: ErrProtocol,
			setup: func(f *fake) { f.onOption = f.replyWith(optGo, optReply(optGo, 77, nil)) },
			want:  []string{"unexpected reply type 77 to NBD_OPT_GO"}},
		{name: "short meta context", opts: Options{Export: "e", MetaContexts: base}, kind: ErrProtocol,
			setup: func(f *fake) {
				f.onOption = f.replyWith(optSetMetaContext, optReply(optSetMetaContext, repMetaContext, []byte{0, 0, 0, 1}))
			},
			want: []string{"NBD_REP_META_CONTEXT of 4 bytes"}},
		{name: "duplicate context id", opts: Options{Export: "e", MetaContexts: base}, kind: ErrProtocol,
			setup: func(f *fake) {
				f.onOption = f.replyWith(optSetMetaContext,
					optReply(optSetMetaContext, repMetaContext, metaContextData(1, BaseAllocation)),
					optReply(optSetMetaContext, repMetaContext, metaContextData(1, "x:y")))
			},
			want: []string{"two metadata contexts with id 1"}},
		{name: "meta contexts unsupported", opts: Options{Export: "e", MetaContexts: base}, kind: errdefs.ErrUnavailable, wantAbort: true,
			setup: func(f *fake) {
				f.onOption = f.replyWith(optSetMetaContext, optReply(optSetMetaContext, repErrUnsup, nil))
			},
			want: []string{"the server does not support metadata contexts (NBD_REP_ERR_UNSUP); use a server with NBD_CMD_BLOCK_STATUS"}},
		{name: "no fixed newstyle", opts: Options{Export: "e"}, kind: errdefs.ErrUnavailable,
			setup: func(f *fake) { f.hsFlags = 0 },
			want:  []string{"does not offer fixed newstyle negotiation"}},
		{name: "invalid options", opts: Options{Export: "e", MetaContexts: []string{"nocolon"}}, kind: errdefs.ErrInvalid,
			want: []string{`metadata context "nocolon" has no namespace`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, 4096)
			f.contexts = []string{BaseAllocation, DirtyBitmap("b")}
			if tc.setup != nil {
				tc.setup(f)
			}
			c, err := f.start(tc.opts)
			if err == nil {
				c.Close()
			}
			wantErr(t, err, tc.kind, tc.want...)
			if tc.name == "invalid options" {
				return
			}
			f.wait()
			f.mu.Lock()
			aborted := f.gotAbort
			f.mu.Unlock()
			if aborted != tc.wantAbort {
				t.Errorf("NBD_OPT_ABORT sent: %v, want %v", aborted, tc.wantAbort)
			}
		})
	}
}

func TestGreetingErrors(t *testing.T) {
	oldstyle := be.AppendUint64(be.AppendUint64(nil, magicNBD), magicOldstyle)
	cases := []struct {
		name  string
		greet []byte
		kind  error
		want  string
	}{
		{"not NBD", []byte("SSH-2.0-OpenSSH_9.2p1 Debian\r\n"), ErrProtocol, `the peer is not an NBD server: it greeted with "SSH-2.0-"`},
		{"oldstyle", append(oldstyle, make([]byte, 140)...), errdefs.ErrUnavailable, "oldstyle negotiation"},
		{"bad second magic", be.AppendUint64(be.AppendUint64(nil, magicNBD), 5), ErrProtocol, "magic 0x5 after NBDMAGIC"},
		{"hang up", nil, errdefs.ErrUnavailable, "reading the server's greeting: connection to the NBD server lost"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := socketPair(t)
			go func() {
				sc.Write(tc.greet)
				sc.Close()
			}()
			_, err := NewClient(testCtx(t), cc, Options{})
			wantErr(t, err, tc.kind, tc.want)
		})
	}
}

func TestContexts(t *testing.T) {
	// A server that says nothing: the handshake ends with ctx.
	cc, _ := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewClient(ctx, cc, Options{})
	wantErr(t, err, errdefs.ErrTimeout, "nbd: handshake")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("handshake timeout: %v after %v", err, time.Since(start))
	}

	// A request that never gets its answer.
	f := newFake(t, 64<<10)
	stall := true
	f.onRequest = func(req request) bool { return stall }
	c, err := f.start(Options{Export: "e"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = c.Read(canceled, 0, 1)
	wantErr(t, err, errdefs.ErrCanceled, "nbd: read of 1 bytes at offset 0")
	if !errors.Is(err, context.Canceled) || len(f.seen()) != 0 {
		t.Errorf("read with a canceled context: %v; %d requests sent", err, len(f.seen()))
	}

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Read(ctx, 0, 1)
	wantErr(t, err, errdefs.ErrTimeout, "cut short, so the connection is closed: dial again")
	_, err = c.Read(testCtx(t), 0, 1)
	wantErr(t, err, errdefs.ErrUnavailable, "given up after an earlier failure")
}

func TestCloseDuringRequest(t *testing.T) {
	f := newFake(t, 64<<10)
	f.onRequest = func(req request) bool { return true } // never answers
	c, err := f.start(Options{Export: "e"})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(testCtx(t), 0, 1)
		errc <- err
	}()
	for len(f.seen()) == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, <-errc, errdefs.ErrUnavailable, "client was closed")
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for i, o := range []Options{
		{Export: strings.Repeat("x", 4097)},
		{Export: "a\x00b"},
		{Export: "\xff"},
		{MetaContexts: []string{BaseAllocation, BaseAllocation}},
		{MetaContexts: make([]string, 65)},
	} {
		if err := o.validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("case %d: validate = %v", i, err)
		}
	}
	_, err := Dial(testCtx(t), "udp", "x", Options{})
	wantErr(t, err, errdefs.ErrInvalid, `network "udp"`)
	_, err = Dial(testCtx(t), "unix", t.TempDir()+"/none.sock", Options{})
	wantErr(t, err, errdefs.ErrUnavailable, "connecting to unix", "is the server running")
}

func TestSelectAndClip(t *testing.T) {
	exts := []Extent{{0, 10, 1}, {10, 10, 1}, {20, 5, 0}, {25, 5, 3}, {30, 5, 1}}
	if got := Select(exts, 1, 1); !reflect.DeepEqual(got, []Extent{{0, 20, 1}, {25, 5, 3}, {30, 5, 1}}) {
		t.Errorf("Select = %v", got)
	}
	if got := clip(append([]Extent(nil), exts...), 5, 27); !reflect.DeepEqual(got, []Extent{{5, 5, 1}, {10, 10, 1}, {20, 5, 0}, {25, 2, 3}}) {
		t.Errorf("clip = %v", got)
	}
}

func TestServerText(t *testing.T) {
	if got := serverText([]byte("a\x00b\nc\xff")); got != "a b c\uFFFD" {
		t.Errorf("serverText = %q", got)
	}
	if got := serverText(bytes.Repeat([]byte("é"), 400)); len(got) > 515 || !strings.HasSuffix(got, "...") {
		t.Errorf("long serverText: %d bytes", len(got))
	}
}

// coverage against a byte map: random chunks, in any order.
func TestCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 2000; round++ {
		const off, size = 1000, 64
		var c coverage
		var model [size]bool
		for i := 0; i < 20; i++ {
			at, n := int64(r.IntN(size+4)-2), int64(r.IntN(20)+1)
			err := c.add(uint64(off+at), n, off, size)
			ok := at >= 0 && at+n <= size
			for j := at; ok && j < at+n; j++ {
				ok = !model[j]
			}
			if ok != (err == nil) {
				t.Fatalf("round %d: add(%d, %d) = %v; want ok %v (spans %v)", round, at, n, err, ok, c.spans)
			}
			if ok {
				for j := at; j < at+n; j++ {
					model[j] = true
				}
			}
		}
		var want []span
		for j := int64(0); j < size; j++ {
			if !model[j] {
				continue
			}
			if k := len(want); k > 0 && want[k-1].hi == off+j {
				want[k-1].hi++
			} else {
				want = append(want, span{off + j, off + j + 1})
			}
		}
		if !reflect.DeepEqual(c.spans, want) && (len(c.spans) != 0 || len(want) != 0) {
			t.Fatalf("round %d: spans %v, want %v", round, c.spans, want)
		}
	}
	var c coverage
	for i := 0; i < maxFragments; i++ {
		if err := c.add(uint64(2*i), 1, 0, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.add(1<<19, 1, 0, 1<<20); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "disjoint pieces") {
		t.Errorf("too many pieces: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	ctx := testCtx(t)
	f := newFake(t, 64<<10)
	f.disk = testDisk()
	f.contexts = []string{BaseAllocation}
	f.extents[BaseAllocation] = []Extent{{0, 64 << 10, 0}}
	c, err := f.start(Options{Export: "e", MetaContexts: []string{BaseAllocation}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 8)
	for g := range 8 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 50 {
				off, n := r.IntN(60<<10), r.IntN(4<<10)
				if g%2 == 0 {
					got, err := c.Read(ctx, int64(off), n)
					if err != nil || !bytes.Equal(got, f.disk[off:off+n]) {
						errc <- fmt.Errorf("read %d at %d: %v", n, off, err)
						return
					}
				} else if _, err := c.BlockStatus(ctx, int64(off), int64(n+1), BaseAllocation); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}
