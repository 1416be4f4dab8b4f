package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

var be = binary.BigEndian

// handshake is the option haggling of one connection (fixed newstyle).
type handshake struct {
	conn     net.Conn
	br       *bufio.Reader
	opts     Options
	noZeroes bool
	// inSync: the last option got its final reply, so NBD_OPT_ABORT may be
	// sent (a soft disconnect); otherwise the client can only hang up.
	inSync bool
}

// result is what a successful handshake learned.
type result struct {
	exp   Export
	ids   map[string]uint32 // the contexts asked for, by name
	known map[uint32]string // every context the server selected, by id
}

// violation reports a protocol violation during the handshake; the client
// hangs up instead of aborting politely.
func (h *handshake) violation(format string, args ...any) error {
	h.inSync = false
	return protocolErr("nbd: handshake: "+format, args...)
}

func (h *handshake) run(ctx context.Context) (result, error) {
	var res result
	if err := h.greet(); err != nil {
		return res, err
	}
	if h.opts.TLS != nil {
		if err := h.startTLS(ctx); err != nil {
			return res, err
		}
		res.exp.TLS = true
	}
	structured, err := h.structuredReplies()
	if err != nil {
		return res, err
	}
	res.exp.Structured = structured
	if len(h.opts.MetaContexts) > 0 {
		if !structured {
			return res, fmt.Errorf("nbd: the server does not support structured replies (NBD_OPT_STRUCTURED_REPLY), which block status needs; use a newer server (QEMU 2.11 or later) or dial without MetaContexts: %w", errdefs.ErrUnavailable)
		}
		if res.ids, res.known, err = h.setMetaContexts(); err != nil {
			return res, err
		}
		res.exp.MetaContexts = append([]string(nil), h.opts.MetaContexts...)
	}
	if err := h.goExport(&res.exp); err != nil {
		return res, err
	}
	res.exp.Name = h.opts.Export
	return res, nil
}

// greet reads the server's greeting and answers with the client flags.
func (h *handshake) greet() error {
	var b [18]byte
	if _, err := io.ReadFull(h.br, b[:16]); err != nil {
		return ioErr("nbd: reading the server's greeting", err)
	}
	if m := be.Uint64(b[0:]); m != magicNBD {
		return h.violation("the peer is not an NBD server: it greeted with %q", serverText(b[:8]))
	}
	switch m := be.Uint64(b[8:]); m {
	case magicOpt:
	case magicOldstyle:
		return fmt.Errorf("nbd: the server uses oldstyle negotiation, which has no export names or options; serve the export with a newstyle server (qemu-nbd is one by default): %w", errdefs.ErrUnavailable)
	default:
		return h.violation("greeting has magic %#x after NBDMAGIC, neither IHAVEOPT nor oldstyle", m)
	}
	if _, err := io.ReadFull(h.br, b[16:18]); err != nil {
		return ioErr("nbd: reading the server's handshake flags", err)
	}
	flags := be.Uint16(b[16:])
	if flags&flagFixedNewstyle == 0 {
		return fmt.Errorf("nbd: the server does not offer fixed newstyle negotiation (handshake flags %#x), which this client needs to negotiate options; use a newer NBD server: %w", flags, errdefs.ErrUnavailable)
	}
	cflags := uint32(cflagFixedNewstyle)
	if flags&flagNoZeroes != 0 {
		cflags |= cflagNoZeroes
		h.noZeroes = true
	}
	if _, err := h.conn.Write(be.AppendUint32(nil, cflags)); err != nil {
		return ioErr("nbd: sending the client flags", err)
	}
	h.inSync = true
	return nil
}

// send writes one option.
func (h *handshake) send(opt uint32, data []byte) error {
	b := make([]byte, 0, 16+len(data))
	b = be.AppendUint64(b, magicOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	h.inSync = false
	if _, err := h.conn.Write(b); err != nil {
		return ioErr("nbd: sending "+optName(opt), err)
	}
	return nil
}

// reply reads one option reply to opt, checking its header and bounding its length.
func (h *handshake) reply(opt uint32) (typ uint32, data []byte, err error) {
	var b [20]byte
	if _, err := io.ReadFull(h.br, b[:]); err != nil {
		h.inSync = false
		return 0, nil, ioErr("nbd: reading the reply to "+optName(opt), err)
	}
	if m := be.Uint64(b[0:]); m != magicOptReply {
		return 0, nil, h.violation("the reply to %s starts with %#x, not the option reply magic", optName(opt), m)
	}
	if o := be.Uint32(b[8:]); o != opt {
		return 0, nil, h.violation("the server answered %s to our %s", optName(o), optName(opt))
	}
	typ, n := be.Uint32(b[12:]), be.Uint32(b[16:])
	if n > maxOptReply {
		return 0, nil, h.violation("%s to %s claims %d bytes, more than the %d this client accepts", repName(typ), optName(opt), n, maxOptReply)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(h.br, data); err != nil {
		h.inSync = false
		return 0, nil, ioErr("nbd: reading the reply to "+optName(opt), err)
	}
	// Every option this client sends ends with an ACK or an error.
	h.inSync = typ == repAck || typ&repErrBit != 0
	return typ, data, nil
}

// ack checks that a final NBD_REP_ACK carries no data.
func (h *handshake) ack(opt uint32, data []byte) error {
	if len(data) != 0 {
		return h.violation("NBD_REP_ACK to %s carries %d bytes; it has none", optName(opt), len(data))
	}
	return nil
}

// refused turns an error reply into an OptionError that says what to do.
func (h *handshake) refused(opt, typ uint32, data []byte, what, fix string) error {
	e := &OptionError{Option: opt, Reply: typ, Message: serverText(data), what: what, fix: fix}
	switch typ {
	case repErrUnknown:
		e.what = fmt.Sprintf("export %q not found on the server", h.opts.Export)
		e.fix = "list the server's exports (qemu-nbd --list) or check the name"
	case repErrTLSReqd:
		e.fix = "the server requires TLS: dial with Options.TLS set"
	case repErrShutdown:
		e.fix = "the server is shutting down: dial again once it is back"
	case repErrPolicy:
		if e.fix == "" {
			e.fix = "the server's configuration forbids it"
		}
	}
	return e
}

func (h *handshake) startTLS(ctx context.Context) error {
	if err := h.send(optStartTLS, nil); err != nil {
		return err
	}
	typ, data, err := h.reply(optStartTLS)
	switch {
	case err != nil:
		return err
	case typ&repErrBit != 0:
		return h.refused(optStartTLS, typ, data, "the server refused TLS",
			"serve the export with TLS (qemu-nbd --object tls-creds-x509,... --tls-creds ID) or dial without Options.TLS")
	case typ != repAck:
		return h.violation("unexpected %s to NBD_OPT_STARTTLS", repName(typ))
	}
	if err := h.ack(optStartTLS, data); err != nil {
		return err
	}
	if n := h.br.Buffered(); n > 0 {
		return h.violation("the server sent %d bytes after accepting TLS, before the TLS handshake", n)
	}
	// From here on a failure leaves no way back to plain text: hang up.
	h.inSync = false
	tc := tls.Client(h.conn, h.opts.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("nbd: TLS handshake with the server failed (check its certificate against Options.TLS: RootCAs, ServerName): %w: %w", errdefs.ErrUnavailable, err)
	}
	h.conn = tc
	h.br.Reset(tc)
	h.inSync = true
	return nil
}

// structuredReplies asks for structured replies; false if the server has none.
func (h *handshake) structuredReplies() (bool, error) {
	if err := h.send(optStructured, nil); err != nil {
		return false, err
	}
	typ, data, err := h.reply(optStructured)
	switch {
	case err != nil:
		return false, err
	case typ == repAck:
		return true, h.ack(optStructured, data)
	case typ == repErrUnsup:
		return false, nil // an old server: simple replies only
	case typ&repErrBit != 0:
		return false, h.refused(optStructured, typ, data, "the server refused structured replies", "")
	}
	return false, h.violation("unexpected %s to NBD_OPT_STRUCTURED_REPLY", repName(typ))
}

func (h *handshake) setMetaContexts() (ids map[string]uint32, known map[uint32]string, err error) {
	name := h.opts.Export
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint32(b, uint32(len(h.opts.MetaContexts)))
	for _, q := range h.opts.MetaContexts {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	if err := h.send(optSetMetaContext, b); err != nil {
		return nil, nil, err
	}
	known = map[uint32]string{}
	byName := map[string]uint32{}
	for i := 0; ; i++ {
		if i > maxOptReplies {
			return nil, nil, h.violation("more than %d replies to NBD_OPT_SET_META_CONTEXT", maxOptReplies)
		}
		typ, data, err := h.reply(optSetMetaContext)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case typ == repMetaContext:
			if len(data) < 5 || len(data) > 4+maxNameOrMsg {
				return nil, nil, h.violation("NBD_REP_META_CONTEXT of %d bytes; it holds a 4-byte id and a name of 1 to %d bytes", len(data), maxNameOrMsg)
			}
			id, nm := be.Uint32(data), string(data[4:])
			if _, dup := known[id]; dup {
				return nil, nil, h.violation("two metadata contexts with id %d", id)
			}
			if _, dup := byName[nm]; dup {
				return nil, nil, h.violation("metadata context %q selected twice", serverText(data[4:]))
			}
			known[id], byName[nm] = nm, id
		case typ == repAck:
			if err := h.ack(optSetMetaContext, data); err != nil {
				return nil, nil, err
			}
			ids = map[string]uint32{}
			for _, want := range h.opts.MetaContexts {
				id, ok := byName[want]
				if !ok {
					return nil, nil, h.missingContext(want)
				}
				ids[want] = id
			}
			return ids, known, nil
		case typ == repErrUnsup:
			return nil, nil, h.refused(optSetMetaContext, typ, data, "the server does not support metadata contexts",
				"use a server with NBD_CMD_BLOCK_STATUS (QEMU 2.12 or later) or dial without MetaContexts")
		case typ&repErrBit != 0:
			return nil, nil, h.refused(optSetMetaContext, typ, data,
				fmt.Sprintf("the server refused metadata contexts %q", h.opts.MetaContexts), "check the context names")
		default:
			return nil, nil, h.violation("unexpected %s to NBD_OPT_SET_META_CONTEXT", repName(typ))
		}
	}
}

func (h *handshake) missingContext(name string) error {
	fix := "check the name against what the server offers"
	switch {
	case strings.HasPrefix(name, dirtyBitmapPrefix):
		bm := strings.TrimPrefix(name, dirtyBitmapPrefix)
		fix = fmt.Sprintf("serve it with the bitmap (qemu-nbd -B %s, or \"bitmaps\": [%q] in block-export-add) and check that the image has it (qemu-img info)", bm, bm)
	case name == AllocationDepth:
		fix = "serve it with qemu-nbd -A (--allocation-depth), or \"allocation-depth\": true in block-export-add"
	}
	return fmt.Errorf("nbd: the server did not select metadata context %q for export %q; %s: %w", name, h.opts.Export, fix, errdefs.ErrNotFound)
}

// goExport selects the export with NBD_OPT_GO (or NBD_OPT_EXPORT_NAME on a
// server too old for it) and fills exp's size, flags and block sizes.
func (h *handshake) goExport(exp *Export) error {
	name := h.opts.Export
	b := be.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, 1) // one information request:
	b = be.AppendUint16(b, infoBlockSize)
	if err := h.send(optGo, b); err != nil {
		return err
	}
	exp.MinBlock, exp.PreferredBlock, exp.MaxPayload = 1, 4096, defaultMaxRead
	haveExport := false
	for i := 0; ; i++ {
		if i > maxOptReplies {
			return h.violation("more than %d replies to NBD_OPT_GO", maxOptReplies)
		}
		typ, data, err := h.reply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repInfo:
			if len(data) < 2 {
				return h.violation("NBD_REP_INFO of %d bytes, too short for its type", len(data))
			}
			switch info := be.Uint16(data); info {
			case infoExport:
				if len(data) != 12 {
					return h.violation("NBD_INFO_EXPORT of %d bytes; it has 12", len(data))
				}
				size := be.Uint64(data[2:])
				if size > math.MaxInt64 {
					return h.violation("export size %d is beyond what any disk holds", size)
				}
				exp.Size, exp.Flags = int64(size), Flags(be.Uint16(data[10:]))
				haveExport = true
			case infoBlockSize:
				if len(data) != 14 {
					return h.violation("NBD_INFO_BLOCK_SIZE of %d bytes; it has 14", len(data))
				}
				lo, pref, hi := be.Uint32(data[2:]), be.Uint32(data[6:]), be.Uint32(data[10:])
				if lo == 0 || lo > 64<<10 || lo&(lo-1) != 0 || pref < lo || pref&(pref-1) != 0 || hi < lo {
					return h.violation("invalid block sizes: minimum %d, preferred %d, maximum %d (the minimum and preferred must be powers of 2, the minimum at most 64 KiB)", lo, pref, hi)
				}
				exp.MinBlock, exp.PreferredBlock, exp.MaxPayload = lo, pref, hi
			default: // names, descriptions and future types: not needed
			}
		case typ == repAck:
			if err := h.ack(optGo, data); err != nil {
				return err
			}
			if !haveExport {
				return h.violation("NBD_OPT_GO accepted without the export's size (NBD_INFO_EXPORT)")
			}
			h.inSync = false // transmission phase: NBD_OPT_ABORT no longer applies
			return nil
		case typ == repErrUnsup:
			return h.exportName(exp)
		case typ&repErrBit != 0:
			return h.refused(optGo, typ, data, fmt.Sprintf("the server refused export %q", name), "")
		default:
			return h.violation("unexpected %s to NBD_OPT_GO", repName(typ))
		}
	}
}

// exportName is the fallback for servers without NBD_OPT_GO. Such a server
// cannot refuse with a reason: it hangs up.
func (h *handshake) exportName(exp *Export) error {
	if err := h.send(optExportName, []byte(h.opts.Export)); err != nil {
		return err
	}
	h.inSync = false
	var b [10 + 124]byte
	n := len(b)
	if h.noZeroes {
		n = 10
	}
	if _, err := io.ReadFull(h.br, b[:n]); err != nil {
		return fmt.Errorf("nbd: the server hung up after NBD_OPT_EXPORT_NAME %q (an old server that cannot say why); check the export name: %w: %w", h.opts.Export, errdefs.ErrUnavailable, err)
	}
	size := be.Uint64(b[0:])
	if size > math.MaxInt64 {
		return h.violation("export size %d is beyond what any disk holds", size)
	}
	exp.Size, exp.Flags = int64(size), Flags(be.Uint16(b[8:]))
	return nil
}

// abort ends the handshake politely (NBD_OPT_ABORT), waiting a moment for the
// server's acknowledgement, which the spec lets it skip.
func (h *handshake) abort() {
	_ = h.conn.SetDeadline(time.Now().Add(time.Second))
	if h.send(optAbort, nil) == nil {
		_, _, _ = h.reply(optAbort)
	}
}
