package qga

import (
	"encoding/base64"
	"fmt"
	"time"
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

// Every call has a time limit of its own too, whatever the caller's ctx
// allows (a cleanup runs with none): the stream serves one call at a time,
// so a call the agent never answers would keep every other caller out, the
// heartbeat and a thaw included. The limit counts from the call's start,
// its wait for its turn included.
const (
	// quickWait: commands the agent answers at once.
	quickWait = 30 * time.Second
	// dataWait: one chunk of file data or exec output (up to 16 MiB) over
	// a slow virtio-serial link, or a freeze's sync of the guest's caches.
	dataWait = 2 * time.Minute
)

// limit is what the client allows one command.
type limit struct {
	answer int           // bytes of the answer line
	wait   time.Duration // the whole call, waiting for our turn included
}

// commandLimit is the limit of command.
func commandLimit(command string) limit {
	switch command {
	case "guest-sync-delimited", "guest-ping", "guest-info", "guest-get-host-name", "guest-get-osinfo",
		"guest-get-time", "guest-set-time", "guest-shutdown", "guest-exec", "guest-fsfreeze-status",
		"guest-file-open", "guest-file-close", "guest-file-seek", "guest-file-flush":
		return limit{answer: smallAnswer, wait: quickWait}
	case "guest-fsfreeze-freeze", "guest-fsfreeze-thaw", "guest-file-write":
		return limit{answer: smallAnswer, wait: dataWait}
	case "guest-exec-status":
		return limit{answer: execAnswer, wait: dataWait}
	case "guest-file-read":
		// FileRead sets the answer's limit from its count.
		return limit{answer: fileReadAnswer(transferChunk), wait: dataWait}
	}
	return limit{answer: listAnswer, wait: quickWait}
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
