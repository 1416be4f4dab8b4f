package nbd

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Magic numbers of the NBD protocol (doc/proto.md).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC": the server's first 8 bytes
	magicOpt        = 0x49484156454f5054 // "IHAVEOPT": newstyle; also starts each option
	magicOldstyle   = 0x00420281861253   // cliserv_magic: oldstyle negotiation
	magicOptReply   = 0x3e889045565a9    // starts each option reply
	magicRequest    = 0x25609513         // starts each request
	magicSimple     = 0x67446698         // a simple reply
	magicStructured = 0x668e33ef         // a structured reply chunk
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	cflagFixedNewstyle = 1 << 0
	cflagNoZeroes      = 1 << 1
)

// Options (NBD_OPT_*).
const (
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructured     = 8
	optListMetaCtx    = 9
	optSetMetaContext = 10
	optExtendedHdrs   = 11
)

// Option reply types (NBD_REP_*); errors have bit 31 set.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4

	repErrBit          = 1 << 31
	repErrUnsup        = repErrBit + 1
	repErrPolicy       = repErrBit + 2
	repErrInvalid      = repErrBit + 3
	repErrPlatform     = repErrBit + 4
	repErrTLSReqd      = repErrBit + 5
	repErrUnknown      = repErrBit + 6
	repErrShutdown     = repErrBit + 7
	repErrBlockSizeReq = repErrBit + 8
	repErrTooBig       = repErrBit + 9
	repErrExtHeaderReq = repErrBit + 10
)

// Information types in NBD_REP_INFO (NBD_INFO_*).
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Commands (NBD_CMD_*).
const (
	cmdRead        = 0
	cmdDisc        = 2
	cmdBlockStatus = 7
)

// Structured reply chunk types (NBD_REPLY_TYPE_*) and flags.
const (
	chunkNone        = 0
	chunkOffsetData  = 1
	chunkOffsetHole  = 2
	chunkBlockStatus = 5
	chunkErrorBit    = 1 << 15
	chunkError       = chunkErrorBit + 1
	chunkErrorOffset = chunkErrorBit + 2

	replyFlagDone = 1 << 0
)

// Error values in replies (NBD_E*).
const (
	errnoPerm      = 1
	errnoIO        = 5
	errnoNoMem     = 12
	errnoInval     = 22
	errnoNoSpc     = 28
	errnoOverflow  = 75
	errnoNotSup    = 95
	errnoShutdown  = 108
	maxNameOrMsg   = 4096 // the spec's limit on names and messages
	defaultMaxRead = 32 << 20
)

// Limits on what this client accepts from a server, so that a hostile or
// broken one costs a clear error instead of memory.
const (
	maxOptReply      = 64 << 10      // payload of one option reply
	maxOptReplies    = 1024          // replies to one option
	maxMetaContexts  = 64            // contexts one client may ask for
	maxReadRequest   = 32 << 20      // bytes asked for in one NBD_CMD_READ
	maxStatusRequest = 1 << 30       // bytes asked about in one NBD_CMD_BLOCK_STATUS
	maxExtentsChunk  = 1 << 20       // descriptors in one block status chunk (the spec's SHOULD)
	maxErrorChunk    = 6 + 65535 + 8 // an error chunk: errno, message length, message, offset
	maxFragments     = 4096          // disjoint pieces a read reply may be assembled from
)

var optNames = map[uint32]string{
	optExportName: "NBD_OPT_EXPORT_NAME", optAbort: "NBD_OPT_ABORT", optList: "NBD_OPT_LIST",
	optStartTLS: "NBD_OPT_STARTTLS", optInfo: "NBD_OPT_INFO", optGo: "NBD_OPT_GO",
	optStructured: "NBD_OPT_STRUCTURED_REPLY", optListMetaCtx: "NBD_OPT_LIST_META_CONTEXT",
	optSetMetaContext: "NBD_OPT_SET_META_CONTEXT", optExtendedHdrs: "NBD_OPT_EXTENDED_HEADERS",
}

var repNames = map[uint32]string{
	repAck: "NBD_REP_ACK", repServer: "NBD_REP_SERVER", repInfo: "NBD_REP_INFO",
	repMetaContext: "NBD_REP_META_CONTEXT", repErrUnsup: "NBD_REP_ERR_UNSUP",
	repErrPolicy: "NBD_REP_ERR_POLICY", repErrInvalid: "NBD_REP_ERR_INVALID",
	repErrPlatform: "NBD_REP_ERR_PLATFORM", repErrTLSReqd: "NBD_REP_ERR_TLS_REQD",
	repErrUnknown: "NBD_REP_ERR_UNKNOWN", repErrShutdown: "NBD_REP_ERR_SHUTDOWN",
	repErrBlockSizeReq: "NBD_REP_ERR_BLOCK_SIZE_REQD", repErrTooBig: "NBD_REP_ERR_TOO_BIG",
	repErrExtHeaderReq: "NBD_REP_ERR_EXT_HEADER_REQD",
}

var errnoNames = map[uint32]string{
	errnoPerm: "EPERM", errnoIO: "EIO", errnoNoMem: "ENOMEM", errnoInval: "EINVAL",
	errnoNoSpc: "ENOSPC", errnoOverflow: "EOVERFLOW", errnoNotSup: "ENOTSUP",
	errnoShutdown: "ESHUTDOWN",
}

func optName(o uint32) string {
	if s, ok := optNames[o]; ok {
		return s
	}
	return fmt.Sprintf("option %d", o)
}

func repName(r uint32) string {
	if s, ok := repNames[r]; ok {
		return s
	}
	if r&repErrBit != 0 {
		return fmt.Sprintf("NBD_REP_ERR %#x", r)
	}
	return fmt.Sprintf("reply type %d", r)
}

func errnoName(e uint32) string {
	if s, ok := errnoNames[e]; ok {
		return fmt.Sprintf("%s (%d)", s, e)
	}
	return fmt.Sprintf("error %d", e)
}

// serverText makes a string the server sent fit for an error message: valid
// UTF-8, no control characters, at most 512 bytes.
func serverText(b []byte) string {
	const max = 512
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
