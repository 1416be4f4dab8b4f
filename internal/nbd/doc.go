// Package nbd is a small client for the Network Block Device protocol
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md), made
// to read point-in-time disk views that QEMU exports (qemu-nbd, or QEMU's
// built-in server through block-export-add) together with their dirty
// bitmaps, for backups.
//
// Supported:
//
//   - Dial over a unix socket or TCP, or NewClient on a net.Conn.
//   - Fixed newstyle negotiation only (every NBD server of the last decade):
//     NBD_OPT_STARTTLS when Options.TLS is set, NBD_OPT_STRUCTURED_REPLY,
//     NBD_OPT_SET_META_CONTEXT for the contexts in Options.MetaContexts
//     (BaseAllocation, DirtyBitmap(name), AllocationDepth, or any other
//     name), then NBD_OPT_GO with NBD_INFO_BLOCK_SIZE, falling back to
//     NBD_OPT_EXPORT_NAME on servers without NBD_OPT_GO.
//   - Read and ReadInto (NBD_CMD_READ), with structured replies (data, holes
//     read as zeroes, error chunks) or simple ones; requests are split at the
//     maximum payload and widened to the server's minimum block size.
//   - BlockStatus (NBD_CMD_BLOCK_STATUS) for one negotiated context, and
//     WalkExtents and Extents, which walk a range or the whole export in
//     bounded requests and merge neighbouring extents with equal flags;
//     Select picks extents by flags (dirty ones, ones that may hold data).
//   - Close: NBD_OPT_ABORT when a handshake fails after a refusal,
//     NBD_CMD_DISC when a connection ends.
//
// Every context bounds its call's socket I/O (see internal/ioctx). Requests
// on one Client go one at a time; dial several Clients to read in parallel.
//
// Everything the server sends is checked before it is trusted: magics,
// handles, option echoes, reply and chunk lengths against fixed limits,
// offsets and lengths against the request, overlapping and missing data,
// extents past the request, unknown context ids. A violation is an error
// wrapping ErrProtocol and the client hangs up (the stream can no longer be
// trusted); an error the server reports for a command is a *CommandError and
// the connection stays usable; a refused option is an *OptionError. All carry
// an errdefs kind.
//
// Not supported: writes, trim, flush and cache commands, NBD_OPT_LIST and
// NBD_OPT_LIST_META_CONTEXT, extended headers (64-bit lengths), requests in
// parallel on one connection, and the oldstyle and plain newstyle
// handshakes. A context that ends while a reply is being read leaves the
// stream out of step, so the client hangs up and must be dialled again.
package nbd
