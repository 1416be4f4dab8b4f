package qga

import (
	"encoding/base64"
	"fmt"
)

// The guest is not trusted, so each command's answer has a size limit, and
// the client never buffers more than that: a line over it is read and
// dropped piece by piece. Most answers are tiny; only file data and exec
// output are big, and only those get big limits.
const (
	// smallAnswer: a pid, a handle, a count, a time, a host name, the OS,
	// guest-info's command list (about 4 KiB for 60 commands).
	smallAnswer = 64 << 10
	// listAnswer: lists the guest makes long (interfaces with their
	// statistics on a host of many containers), and commands not named here.
	listAnswer = 1 << 20
	// execAnswer: guest-exec-status output. The agent captures up to 16 MiB
	// per stream and sends it base64 (4/3); more than this is refused.
	execAnswer = 24 << 20
)

// answerLimit is the most the client reads of command's answer.
func answerLimit(command string) int {
	switch command {
	case "guest-sync-delimited", "guest-ping", "guest-info", "guest-get-host-name", "guest-get-osinfo",
		"guest-get-time", "guest-set-time", "guest-shutdown", "guest-exec",
		"guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw",
		"guest-file-open", "guest-file-close", "guest-file-seek", "guest-file-flush", "guest-file-write":
		return smallAnswer
	case "guest-exec-status":
		return execAnswer
	case "guest-file-read":
		return fileReadAnswer(maxChunk)
	}
	return listAnswer
}

// fileReadAnswer bounds the answer to a guest-file-read of count bytes:
// base64 of the data, doubled for agents that escape '/' as "\/", plus the
// answer's few other members.
func fileReadAnswer(count int) int {
	return 2*base64.StdEncoding.EncodedLen(count) + 4<<10
}

// sizeText writes a limit for people: 64 KiB, 1 MiB.
func sizeText(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
