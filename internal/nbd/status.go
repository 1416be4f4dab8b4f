package nbd

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/hvproject/hv/internal/errdefs"
)

// Extent is a range of the export and its flags in one metadata context.
type Extent struct {
	Offset int64
	Length int64
	Flags  uint32
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// BlockStatus asks the server about [offset, offset+length) in metaContext,
// one of those negotiated. The extents are consecutive from offset and clipped
// to the range, but may stop short of its end, as servers answer a prefix of
// a long range: ask again from the last extent's end, or use WalkExtents.
func (c *Client) BlockStatus(ctx context.Context, offset, length int64, metaContext string) ([]Extent, error) {
	id, err := c.contextID(metaContext)
	if err != nil {
		return nil, err
	}
	if err := c.checkRange("block status", offset, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	// Ask about an aligned range of at most maxStatusRequest bytes (a
	// multiple of any minimum block size), then clip to what was asked.
	start := c.alignDown(offset)
	end := c.alignUp(offset + length)
	if end-start > maxStatusRequest {
		end = start + maxStatusRequest
	}
	what := fmt.Sprintf("nbd: block status of %d bytes at offset %d (%s)", end-start, start, metaContext)
	var out []Extent
	err = c.do(ctx, what, func(handle uint64) error {
		if err := c.send(cmdBlockStatus, handle, start, uint32(end-start)); err != nil {
			return err
		}
		exts, err := readStatusReply(c.br, handle, start, end-start, c.known, id)
		if err != nil {
			return err
		}
		if out = clip(exts, offset, min(offset+length, end)); len(out) == 0 {
			// Only possible when the request was widened to align it and
			// the server's extents are smaller than its own minimum block size.
			return protocolErr("extents that end before offset %d, though the request started at %d, within the minimum block size %d", offset, start, c.exp.MinBlock)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// WalkExtents calls fn with the extents of [offset, offset+length) in
// metaContext, in order, neighbours with equal flags merged, asking the
// server about at most 1 GiB at a time. An error from fn stops the walk and
// is returned as is.
func (c *Client) WalkExtents(ctx context.Context, metaContext string, offset, length int64, fn func(Extent) error) error {
	if _, err := c.contextID(metaContext); err != nil {
		return err
	}
	if err := c.checkRange("block status", offset, length); err != nil {
		return err
	}
	var cur Extent
	for pos, end := offset, offset+length; pos < end; {
		exts, err := c.BlockStatus(ctx, pos, min(end-pos, maxStatusRequest), metaContext)
		if err != nil {
			return err
		}
		for _, e := range exts {
			if cur.Length > 0 && cur.Flags == e.Flags {
				cur.Length += e.Length
				continue
			}
			if cur.Length > 0 {
				if err := fn(cur); err != nil {
					return err
				}
			}
			cur = e
		}
		pos = exts[len(exts)-1].End()
	}
	if cur.Length > 0 {
		return fn(cur)
	}
	return nil
}

// Extents returns the whole export's extents in metaContext, neighbours with
// equal flags merged (see WalkExtents).
func (c *Client) Extents(ctx context.Context, metaContext string) ([]Extent, error) {
	var out []Extent
	err := c.WalkExtents(ctx, metaContext, 0, c.exp.Size, func(e Extent) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Select returns the extents whose flags, masked with mask, equal want:
// Select(exts, StateDirty, StateDirty) for a bitmap's dirty extents,
// Select(exts, StateZero, 0) for the parts of base:allocation that may hold data.
// Neighbours are merged.
func Select(exts []Extent, mask, want uint32) []Extent {
	var out []Extent
	for _, e := range exts {
		if e.Flags&mask != want {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End() == e.Offset && out[n-1].Flags == e.Flags {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}

func (c *Client) contextID(name string) (uint32, error) {
	id, ok := c.ids[name]
	if !ok {
		return 0, fmt.Errorf("nbd: metadata context %q was not negotiated (negotiated: %q); list it in Options.MetaContexts when dialling: %w", name, c.exp.MetaContexts, errdefs.ErrInvalid)
	}
	return id, nil
}

// clip keeps the parts of consecutive extents inside [lo, hi).
func clip(exts []Extent, lo, hi int64) []Extent {
	out := exts[:0]
	for _, e := range exts {
		s, t := max(e.Offset, lo), min(e.End(), hi)
		if s < t {
			out = append(out, Extent{Offset: s, Length: t - s, Flags: e.Flags})
		}
	}
	return out
}

// readStatusReply reads the whole reply to a block status request for
// [off, off+size) and returns the extents of context want. Chunks for the
// other negotiated contexts are checked and dropped.
func readStatusReply(r *bufio.Reader, handle uint64, off, size int64, known map[uint32]string, want uint32) ([]Extent, error) {
	seen := map[uint32]bool{}
	var out []Extent
	var failed *CommandError
	for chunks := 0; ; chunks++ {
		h, err := readHeader(r, handle, true)
		if err != nil {
			return nil, err
		}
		if h.simple {
			switch {
			case chunks > 0:
				return nil, protocolErr("a simple reply in the middle of a structured reply")
			case h.errno == 0:
				return nil, protocolErr("a simple reply without error to block status; it must send extents")
			}
			return nil, &CommandError{Command: "block status", Offset: off, Length: size, Errno: h.errno, At: -1}
		}
		switch h.typ {
		case chunkNone:
			if h.length != 0 || !h.done() {
				return nil, protocolErr("NBD_REPLY_TYPE_NONE of %d bytes, done flag %v; it must be empty and final", h.length, h.done())
			}
		case chunkBlockStatus:
			id, exts, err := readStatusChunk(r, h, off, size, known, seen)
			if err != nil {
				return nil, err
			}
			if id == want {
				out = exts
			}
		default:
			if h.typ&chunkErrorBit == 0 {
				return nil, protocolErr("a chunk of type %d in reply to block status", h.typ)
			}
			ce, err := readErrorChunk(r, h, "block status", off, size)
			if err != nil {
				return nil, err
			}
			if failed == nil {
				failed = ce
			}
		}
		if h.done() {
			break
		}
	}
	if failed != nil {
		return nil, failed
	}
	if !seen[want] {
		return nil, protocolErr("the reply to block status lacks %q", known[want])
	}
	return out, nil
}

// readStatusChunk reads one block status chunk of a reply about size bytes
// at off: the metadata context it describes and its extents (the last one
// cut at the range's end). seen records the contexts described so far.
func readStatusChunk(r *bufio.Reader, h header, off, size int64, known map[uint32]string, seen map[uint32]bool) (uint32, []Extent, error) {
	if h.length < 12 || (h.length-4)%8 != 0 || h.length > 4+8*maxExtentsChunk {
		return 0, nil, protocolErr("a block status chunk of %d bytes; it has 4 + 8 per extent, 1 to %d extents", h.length, maxExtentsChunk)
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return 0, nil, ioErr("reading a block status chunk", err)
	}
	id := be.Uint32(b[:])
	if _, ok := known[id]; !ok {
		return 0, nil, protocolErr("block status for metadata context id %d, which the server never selected", id)
	}
	if seen[id] {
		return 0, nil, protocolErr("two block status chunks for %q in one reply", known[id])
	}
	seen[id] = true
	n := int((h.length - 4) / 8)
	out := make([]Extent, 0, min(n, 1024))
	var sum int64 // bytes described so far
	for i := 0; i < n; i++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, ioErr("reading a block status chunk", err)
		}
		l, flags := int64(be.Uint32(b[:])), be.Uint32(b[4:])
		if l == 0 {
			return 0, nil, protocolErr("an extent of 0 bytes for %q", known[id])
		}
		if sum >= size {
			return 0, nil, protocolErr("extents for %q go on past the %d bytes asked about", known[id], size)
		}
		// Only the last extent may reach past the range; cut it.
		e := Extent{Offset: off + sum, Length: min(l, size-sum), Flags: flags}
		sum += e.Length
		out = append(out, e)
	}
	return id, out, nil
}
