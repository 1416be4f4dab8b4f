package nbd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/hvproject/hv/internal/errdefs"
)

// Read returns length bytes of the export from offset. Holes the server
// reports read as zeroes. Large reads are split into requests of at most
// 32 MiB (or the server's maximum payload).
func (c *Client) Read(ctx context.Context, offset int64, length int) ([]byte, error) {
	if length < 0 {
		return nil, fmt.Errorf("nbd: read of %d bytes: the length must not be negative: %w", length, errdefs.ErrInvalid)
	}
	if err := c.checkRange("read", offset, int64(length)); err != nil {
		return nil, err
	}
	p := make([]byte, length)
	if err := c.ReadInto(ctx, p, offset); err != nil {
		return nil, err
	}
	return p, nil
}

// ReadInto fills p with the export's bytes from offset (Read without the
// allocation). On error p's contents are undefined.
func (c *Client) ReadInto(ctx context.Context, p []byte, offset int64) error {
	if err := c.checkRange("read", offset, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		// One request covers at most readMax bytes from an aligned start;
		// readMax is a multiple of MinBlock, so the aligned end fits too.
		start := c.alignDown(offset)
		end := min(offset+int64(len(p)), start+c.readMax)
		reqEnd := c.alignUp(end)
		n := end - offset
		if start == offset && reqEnd == end {
			if err := c.readRequest(ctx, p[:n], offset); err != nil {
				return err
			}
		} else {
			tmp := make([]byte, reqEnd-start)
			if err := c.readRequest(ctx, tmp, start); err != nil {
				return err
			}
			copy(p[:n], tmp[offset-start:])
		}
		p, offset = p[n:], end
	}
	return nil
}

// readRequest is one NBD_CMD_READ of len(p) bytes at off.
func (c *Client) readRequest(ctx context.Context, p []byte, off int64) error {
	what := fmt.Sprintf("nbd: read of %d bytes at offset %d", len(p), off)
	return c.do(ctx, what, func(handle uint64) error {
		if err := c.send(cmdRead, handle, off, uint32(len(p))); err != nil {
			return err
		}
		return readReply(c.br, handle, off, p, c.exp.Structured)
	})
}

// header is a simple reply's or a structured chunk's header.
type header struct {
	simple bool
	errno  uint32 // simple replies
	flags  uint16 // structured chunks
	typ    uint16
	length uint32
}

func (h header) done() bool { return h.flags&replyFlagDone != 0 }

// readHeader reads the header of the next reply to the one request in flight.
func readHeader(r *bufio.Reader, handle uint64, structured bool) (header, error) {
	var b [20]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return header{}, ioErr("reading the reply", err)
	}
	var h header
	var got uint64
	switch m := be.Uint32(b[:]); m {
	case magicSimple:
		if _, err := io.ReadFull(r, b[4:16]); err != nil {
			return h, ioErr("reading the reply", err)
		}
		h.simple, h.errno, got = true, be.Uint32(b[4:]), be.Uint64(b[8:])
	case magicStructured:
		if !structured {
			return h, protocolErr("a structured reply chunk, though structured replies were not negotiated")
		}
		if _, err := io.ReadFull(r, b[4:20]); err != nil {
			return h, ioErr("reading the reply", err)
		}
		h.flags, h.typ, got, h.length = be.Uint16(b[4:]), be.Uint16(b[6:]), be.Uint64(b[8:]), be.Uint32(b[16:])
	default:
		return h, protocolErr("a reply starting with %#x, not a reply magic", m)
	}
	if got != handle {
		return h, protocolErr("a reply for request %#x while only %#x is in flight", got, handle)
	}
	return h, nil
}

// readReply reads the whole reply to a read of len(p) bytes at off into p.
// Every length and offset the server sends is checked against the request
// before anything is read or allocated by it.
func readReply(r *bufio.Reader, handle uint64, off int64, p []byte, structured bool) error {
	size := int64(len(p))
	var cov coverage
	var failed *CommandError
	for chunks := 0; ; chunks++ {
		h, err := readHeader(r, handle, structured)
		if err != nil {
			return err
		}
		if h.simple {
			return readSimple(r, h, chunks, structured, off, p)
		}
		ce, err := readChunk(r, h, &cov, off, p)
		if err != nil {
			return err
		}
		if failed == nil {
			failed = ce
		}
		if h.done() {
			break
		}
	}
	if failed != nil {
		return failed
	}
	if got := cov.total(); got != size {
		return protocolErr("the server reported success for a read of %d bytes at offset %d after sending %d of them", size, off, got)
	}
	return nil
}

// readSimple reads a simple reply to a read of p at off (the chunks-th
// reply header of the request).
func readSimple(r *bufio.Reader, h header, chunks int, structured bool, off int64, p []byte) error {
	switch {
	case chunks > 0:
		return protocolErr("a simple reply in the middle of a structured reply")
	case h.errno != 0:
		return &CommandError{Command: "read", Offset: off, Length: int64(len(p)), Errno: h.errno, At: -1}
	case structured:
		return protocolErr("a simple reply without error to a read; with structured replies reads are answered in chunks")
	}
	if _, err := io.ReadFull(r, p); err != nil {
		return ioErr("reading the data", err)
	}
	return nil
}

// readChunk reads one chunk of a structured reply to a read of p at off into
// p, counting what it covers; an error chunk is returned as a CommandError.
func readChunk(r *bufio.Reader, h header, cov *coverage, off int64, p []byte) (*CommandError, error) {
	size := int64(len(p))
	switch h.typ {
	case chunkNone:
		if h.length != 0 || !h.done() {
			return nil, protocolErr("NBD_REPLY_TYPE_NONE of %d bytes, done flag %v; it must be empty and final", h.length, h.done())
		}
	case chunkOffsetData:
		if h.length < 9 || int64(h.length-8) > size {
			return nil, protocolErr("a data chunk of %d bytes in reply to a read of %d bytes", h.length, size)
		}
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, ioErr("reading a data chunk", err)
		}
		at, n := be.Uint64(b[:]), int64(h.length-8)
		if err := cov.add(at, n, off, size); err != nil {
			return nil, err
		}
		i := int64(at) - off
		if _, err := io.ReadFull(r, p[i:i+n]); err != nil {
			return nil, ioErr("reading a data chunk", err)
		}
	case chunkOffsetHole:
		if h.length != 12 {
			return nil, protocolErr("a hole chunk of %d bytes; it has 12", h.length)
		}
		var b [12]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, ioErr("reading a hole chunk", err)
		}
		at, n := be.Uint64(b[:]), int64(be.Uint32(b[8:]))
		if n == 0 {
			return nil, protocolErr("a hole chunk of 0 bytes")
		}
		if err := cov.add(at, n, off, size); err != nil {
			return nil, err
		}
		i := int64(at) - off
		clear(p[i : i+n])
	default:
		if h.typ&chunkErrorBit == 0 {
			return nil, protocolErr("a chunk of type %d in reply to a read", h.typ)
		}
		return readErrorChunk(r, h, "read", off, size)
	}
	return nil, nil
}

// readErrorChunk reads an error chunk's payload (any type with bit 15 set).
func readErrorChunk(r *bufio.Reader, h header, command string, off, size int64) (*CommandError, error) {
	if h.length < 6 || h.length > maxErrorChunk {
		return nil, protocolErr("an error chunk of %d bytes; it has 6 to %d", h.length, maxErrorChunk)
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:6]); err != nil {
		return nil, ioErr("reading an error chunk", err)
	}
	errno, mlen := be.Uint32(b[:]), uint32(be.Uint16(b[4:]))
	if mlen > h.length-6 {
		return nil, protocolErr("an error message of %d bytes in an error chunk of %d", mlen, h.length)
	}
	msg := make([]byte, mlen)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, ioErr("reading an error chunk", err)
	}
	ce := &CommandError{Command: command, Offset: off, Length: size, Errno: errno, Message: serverText(msg), At: -1}
	rest := int64(h.length - 6 - mlen)
	if h.typ == chunkErrorOffset {
		if rest != 8 {
			return nil, protocolErr("NBD_REPLY_TYPE_ERROR_OFFSET with %d bytes after its message; it has 8", rest)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, ioErr("reading an error chunk", err)
		}
		at := be.Uint64(b[:])
		if at < uint64(off) || at-uint64(off) >= uint64(size) {
			return nil, protocolErr("an error at offset %d, outside the request of %d bytes at %d", at, size, off)
		}
		ce.At = int64(at)
	} else if _, err := io.CopyN(io.Discard, r, rest); err != nil { // fields of error types this client does not know
		return nil, ioErr("reading an error chunk", err)
	}
	if errno == 0 {
		return nil, protocolErr("an error chunk with error value 0")
	}
	return ce, nil
}

// coverage tracks which parts of a read the content chunks filled, refusing
// chunks outside the request or overlapping earlier ones.
type coverage struct {
	spans []span // sorted, disjoint and not touching
}

type span struct{ lo, hi int64 }

// add records n bytes at at, for a request of size bytes at off.
func (c *coverage) add(at uint64, n, off, size int64) error {
	if at < uint64(off) || at-uint64(off) > uint64(size) || n > size-int64(at-uint64(off)) {
		return protocolErr("a chunk for %d bytes at offset %d, outside the read of %d bytes at %d", n, at, size, off)
	}
	lo, hi := int64(at), int64(at)+n
	i := sort.Search(len(c.spans), func(i int) bool { return c.spans[i].hi >= lo })
	overlap := func(j int) bool { return j < len(c.spans) && c.spans[j].lo < hi && c.spans[j].hi > lo }
	if overlap(i) || (i < len(c.spans) && c.spans[i].hi == lo && overlap(i+1)) {
		return protocolErr("a chunk for %d bytes at offset %d overlaps an earlier one", n, at)
	}
	switch {
	case i < len(c.spans) && c.spans[i].hi == lo: // extends span i
		c.spans[i].hi = hi
		if i+1 < len(c.spans) && c.spans[i+1].lo == hi {
			c.spans[i].hi = c.spans[i+1].hi
			c.spans = append(c.spans[:i+1], c.spans[i+2:]...)
		}
	case i < len(c.spans) && c.spans[i].lo == hi: // prefixes span i
		c.spans[i].lo = lo
	default:
		if len(c.spans) >= maxFragments {
			return protocolErr("a read reply in more than %d disjoint pieces", maxFragments)
		}
		c.spans = append(c.spans, span{})
		copy(c.spans[i+1:], c.spans[i:])
		c.spans[i] = span{lo, hi}
	}
	return nil
}

// total is how many bytes the chunks covered.
func (c *coverage) total() int64 {
	var t int64
	for _, s := range c.spans {
		t += s.hi - s.lo
	}
	return t
}
