package nbd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// checkKind fails unless err is one of the errors a server can cause: a
// protocol violation, a lost connection, a refusal or a command error, each
// with an errdefs kind.
func checkKind(t *testing.T, err error) {
	t.Helper()
	var ce *CommandError
	var oe *OptionError
	switch {
	case errors.As(err, &ce), errors.As(err, &oe):
	case errors.Is(err, ErrProtocol) && errors.Is(err, errdefs.ErrUnavailable):
	case errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errdefs.ErrNotFound):
	default:
		t.Fatalf("unclassified error %q", err)
	}
}

// handshakeTranscript is what a server sends for a successful handshake with
// fuzzOptions.
func handshakeTranscript(size uint64, blockSize []uint32) []byte {
	b := greeting(flagFixedNewstyle | flagNoZeroes)
	b = append(b, optReply(optStructured, repAck, nil)...)
	b = append(b, optReply(optSetMetaContext, repMetaContext, metaContextData(1, BaseAllocation))...)
	b = append(b, optReply(optSetMetaContext, repMetaContext, metaContextData(2, DirtyBitmap("b0")))...)
	b = append(b, optReply(optSetMetaContext, repAck, nil)...)
	if blockSize != nil {
		b = append(b, optReply(optGo, repInfo, infoBlockSizeData(blockSize[0], blockSize[1], blockSize[2]))...)
	}
	b = append(b, optReply(optGo, repInfo, infoExportData(size, 3))...)
	return append(b, optReply(optGo, repAck, nil)...)
}

var fuzzOptions = Options{Export: "e", MetaContexts: []string{BaseAllocation, DirtyBitmap("b0")}}

// FuzzHandshake feeds arbitrary server bytes to the whole handshake.
func FuzzHandshake(f *testing.F) {
	f.Add(handshakeTranscript(4<<20, nil))
	f.Add(handshakeTranscript(1<<63-1, []uint32{512, 4096, 1 << 20}))
	f.Add(handshakeTranscript(0, []uint32{1, 1, 1}))
	h := greeting(flagFixedNewstyle)
	f.Add(append(h, optReply(optStructured, repErrUnsup, nil)...))
	f.Add(append(h, optReply(optStructured, repErrTLSReqd, []byte("no"))...))
	f.Add(append(append(h, optReply(optStructured, repAck, nil)...), optReply(optSetMetaContext, repErrUnknown, []byte("export 'e' not present"))...))
	b := append(append(h, optReply(optStructured, repAck, nil)...), optReply(optSetMetaContext, repMetaContext, metaContextData(1, BaseAllocation))...)
	f.Add(append(b, optReply(optSetMetaContext, repAck, nil)...))
	f.Add(append(h, optReply(optStructured, repAck, []byte{0, 0, 0, 0xff})[:16]...))
	f.Add([]byte("NBDMAGIC\x00\x00\x42\x02\x81\x86\x12\x53"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := NewClient(context.Background(), &fakeConn{r: bytes.NewReader(data)}, fuzzOptions)
		if err != nil {
			checkKind(t, err)
			return
		}
		defer c.Close()
		e := c.Export()
		mb := int64(e.MinBlock)
		if e.Size < 0 || mb <= 0 || mb > 64<<10 || mb&(mb-1) != 0 || c.readMax < mb || c.readMax > maxReadRequest || c.readMax%mb != 0 {
			t.Fatalf("accepted export %+v, readMax %d", e, c.readMax)
		}
		if len(c.ids) != 2 || !e.Structured {
			t.Fatalf("accepted without the contexts: %v %+v", c.ids, e)
		}
		for _, id := range c.ids {
			if _, ok := c.known[id]; !ok {
				t.Fatalf("context id %d not known", id)
			}
		}
	})
}

// FuzzReadReply feeds arbitrary bytes as the reply to a read.
func FuzzReadReply(f *testing.F) {
	const h = 1
	d := bytes.Repeat([]byte{9}, 4096)
	f.Add(bytes.Join([][]byte{dataChunk(0, h, 4096, d), noneChunk(h)}, nil), uint32(4096), uint16(4096), true)
	f.Add(bytes.Join([][]byte{holeChunk(0, h, 6144, 2048), dataChunk(replyFlagDone, h, 4096, d[:2048])}, nil), uint32(4096), uint16(4096), true)
	f.Add(bytes.Join([][]byte{dataChunk(0, h, 0, d[:10]), errorChunk(0, h, errnoIO, "bad"), holeChunk(replyFlagDone, h, 10, 10)}, nil), uint32(0), uint16(20), true)
	p := append(be.AppendUint16(be.AppendUint32(nil, errnoIO), 1), 'x')
	f.Add(chunk(replyFlagDone, chunkErrorOffset, h, be.AppendUint64(p, 5)), uint32(0), uint16(20), true)
	f.Add(append(simpleReply(0, h), d[:100]...), uint32(7), uint16(100), false)
	f.Add(simpleReply(errnoInval, h), uint32(7), uint16(100), true)
	f.Add(chunkHeader(replyFlagDone, chunkOffsetData, h, 1<<32-1), uint32(0), uint16(100), true)
	f.Fuzz(func(t *testing.T, data []byte, off uint32, n uint16, structured bool) {
		p := make([]byte, n)
		err := readReply(bufio.NewReader(bytes.NewReader(data)), h, int64(off), p, structured)
		if err != nil {
			checkKind(t, err)
		}
	})
}

// FuzzStatusReply feeds arbitrary bytes as the reply to block status.
func FuzzStatusReply(f *testing.F) {
	const h = 1
	f.Add(bytes.Join([][]byte{statusChunk(0, h, 1, 100, 3, 200, 0), statusChunk(0, h, 2, 300, 1), noneChunk(h)}, nil), uint32(0), uint32(300))
	f.Add(statusChunk(replyFlagDone, h, 1, 1<<31, 0), uint32(4096), uint32(1<<20))
	f.Add(bytes.Join([][]byte{statusChunk(0, h, 2, 1, 1), errorChunk(replyFlagDone, h, errnoInval, "x")}, nil), uint32(0), uint32(1))
	f.Add(chunkHeader(replyFlagDone, chunkBlockStatus, h, 4+8*maxExtentsChunk), uint32(0), uint32(1))
	f.Add(simpleReply(errnoInval, h), uint32(0), uint32(1))
	known := map[uint32]string{1: BaseAllocation, 2: DirtyBitmap("b0")}
	f.Fuzz(func(t *testing.T, data []byte, off, size uint32) {
		if size == 0 {
			return // never asked
		}
		exts, err := readStatusReply(bufio.NewReader(bytes.NewReader(data)), h, int64(off), int64(size), known, 1)
		if err != nil {
			checkKind(t, err)
			return
		}
		if len(exts) == 0 {
			t.Fatal("success without extents")
		}
		at := int64(off)
		for _, e := range exts {
			if e.Offset != at || e.Length <= 0 {
				t.Fatalf("extent %v does not follow %d", e, at)
			}
			at = e.End()
		}
		if at > int64(off)+int64(size) {
			t.Fatalf("extents end at %d, past the %d bytes asked at %d", at, size, off)
		}
	})
}
