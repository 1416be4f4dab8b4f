// Package guest is what the benchmarks share about the tiny test guest
// (internal/testguest): the quick VM the exec and copy benchmarks boot to talk to
// its agent (migrate gives its VM the same memory and CPUs), the firmware, and
// the console line that says user space is up.
package guest

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/stats"
)

// The exec and copy benchmarks talk to a running guest's agent, so they boot the
// quickest VM there is: generation 1, direct kernel boot of the tiny guest (vmlinuz +
// initrd.img, no disk), 256 MiB, 1 vCPU. One VM at a time: first hv's, then the plain
// one, each killed before the other starts.
const (
	AgentMemMiB   = 256
	AgentCPUs     = 1
	AgentCmdline  = "console=ttyS0"
	AgentLimit    = 240 * time.Second // boot to agent answer
	AgentCallWait = 60 * time.Second  // one agent call, one exec
)

// AgentText describes that guest for the sections.
func AgentText() string {
	return fmt.Sprintf("Guest: the tiny test guest by direct kernel boot (vmlinuz + initrd.img, `%s`, no disk; "+
		"the quickest to boot), generation 1 (`-machine pc`), %d MiB, %d vCPU.", AgentCmdline, AgentMemMiB, AgentCPUs)
}

// BootTimes of one run, both from t0: the agent's first answer (the measure) and the
// guest's ready line on its console (0 when not seen).
type BootTimes struct{ Heartbeat, Ready time.Duration }

// String is the heartbeat time, and when the console said ready.
func (b BootTimes) String() string {
	if b.Ready == 0 {
		return stats.Ms(b.Heartbeat) + " (ready line not seen)"
	}
	return fmt.Sprintf("%s (console ready at %s)", stats.Ms(b.Heartbeat), stats.Ms(b.Ready))
}

// Heartbeats are the runs' boot times (the measure).
func Heartbeats(b []BootTimes) []time.Duration {
	var d []time.Duration
	for _, x := range b {
		d = append(d, x.Heartbeat)
	}
	return d
}

// Readies are the runs' console ready times, where the line was seen.
func Readies(b []BootTimes) []time.Duration {
	var d []time.Duration
	for _, x := range b {
		if x.Ready > 0 {
			d = append(d, x.Ready)
		}
	}
	return d
}

// Debian's OVMF, the files hvd uses for generation 2 without Secure Boot.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// ReadyMarker is what the tiny guest prints on its serial console when user space is up
// (the agent starts at the same moment).
const ReadyMarker = "hv-tiny-guest: ready"

// ConsoleWatch notices when ReadyMarker appears in a growing console log, for the
// split between "guest user space up" and "agent answered" in the results.
type ConsoleWatch struct {
	path   string
	offset int64
	carry  []byte
	At     time.Duration // from t0 to the poll that saw the marker; 0 until then
}

// NewConsoleWatch watches what is written to path from now on.
func NewConsoleWatch(path string) *ConsoleWatch {
	w := &ConsoleWatch{path: path}
	if fi, err := os.Stat(path); err == nil {
		w.offset = fi.Size()
	}
	return w
}

// Poll reads what was appended since the last poll and sets At (from t0) when the
// marker is in it. A nil watch does nothing.
func (w *ConsoleWatch) Poll(t0 time.Time) {
	if w == nil || w.At != 0 {
		return
	}
	f, err := os.Open(w.path)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < w.offset {
		w.offset = 0 // truncated: a new file
	}
	b, err := io.ReadAll(io.NewSectionReader(f, w.offset, 1<<30))
	if err != nil || len(b) == 0 {
		return
	}
	w.offset += int64(len(b))
	buf := append(w.carry, b...)
	if strings.Contains(string(buf), ReadyMarker) {
		w.At = time.Since(t0)
		return
	}
	if n := len(ReadyMarker); len(buf) > n {
		buf = buf[len(buf)-n:]
	}
	w.carry = append([]byte(nil), buf...)
}
