package migrate

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/stats"
)

// The guest-visible downtime of a live migration is measured with a loop in the
// guest that writes a line to its serial console every 10 ms, and the host
// noting when each line arrives in the VM's console log: the source's until its
// guest stops, then the target's. The largest gap between two lines is the
// longest time the guest could not run.
//
// The host's clock is the reference because the guest's is not: QEMU stops the
// guest's clocks while the VM is paused, so /proc/uptime in the guest misses the
// paused part of a gap. Each line carries the guest's uptime anyway, to show
// how much of a gap the guest saw, and to check that the target runs the same
// guest on (its uptime goes on from the source's).

// tickPrefix starts each line of the guest's loop.
const tickPrefix = "hvtick "

// tickLoopScript starts the loop in the background (busybox sh; usleep 10 ms).
const tickLoopScript = "(while :; do read u _ </proc/uptime; echo \"" + tickPrefix + "$u\" >/dev/ttyS0; usleep 10000; done) " +
	"</dev/null >/dev/null 2>&1 &"

// tickPoll is how often the console logs are read: the measurement's resolution.
const tickPoll = time.Millisecond

// tick is one line of the loop as the host saw it.
type tick struct {
	at     time.Time // when the host read it
	uptime float64   // the guest's /proc/uptime in it
	file   int       // the console log it came from (index of the watched paths)
}

// tickWatcher reads the lines the loop appends to some console logs.
type tickWatcher struct {
	files []*tickFile
	stop  chan struct{}
	done  chan struct{}
	ticks []tick
}

type tickFile struct {
	path   string
	fi     os.FileInfo // the file read so far; nil until it exists
	offset int64
	carry  []byte
}

// watchTicks starts reading paths every tickPoll; what they hold now is skipped
// (a path that does not exist yet is read from its start once it does).
func watchTicks(paths ...string) *tickWatcher {
	w := &tickWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	for _, p := range paths {
		f := &tickFile{path: p}
		if fi, err := os.Stat(p); err == nil {
			f.fi, f.offset = fi, fi.Size()
		}
		w.files = append(w.files, f)
	}
	go w.loop()
	return w
}

func (w *tickWatcher) loop() {
	defer close(w.done)
	t := time.NewTicker(tickPoll)
	defer t.Stop()
	for {
		for i, f := range w.files {
			w.ticks = append(w.ticks, f.read(i)...)
		}
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// finish stops the watcher and returns the lines seen, in arrival order.
func (w *tickWatcher) finish() []tick {
	close(w.stop)
	<-w.done
	return w.ticks
}

// read returns the complete tick lines appended since the last read. A file
// replaced by another (a VM that moved back here) is read from its start.
func (f *tickFile) read(idx int) []tick {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil
	}
	if f.fi != nil && (!os.SameFile(f.fi, fi) || fi.Size() < f.offset) {
		f.offset, f.carry = 0, nil
	}
	f.fi = fi
	if fi.Size() <= f.offset {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(fh, f.offset, fi.Size()-f.offset))
	if err != nil {
		return nil
	}
	now := time.Now()
	f.offset += int64(len(b))
	buf := append(f.carry, b...)
	end := bytes.LastIndexByte(buf, '\n')
	if end < 0 {
		f.carry = buf
		return nil
	}
	f.carry = append([]byte(nil), buf[end+1:]...)
	return parseTicks(buf[:end], now, idx)
}

// parseTicks finds the loop's lines in console output (the kernel may write
// between them).
func parseTicks(b []byte, at time.Time, file int) []tick {
	var out []tick
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.Index(line, tickPrefix)
		if i < 0 {
			continue
		}
		u, err := strconv.ParseFloat(strings.TrimSpace(line[i+len(tickPrefix):]), 64)
		if err == nil {
			out = append(out, tick{at: at, uptime: u, file: file})
		}
	}
	return out
}

// tickGaps is what one migration looked like from the guest's loop.
type tickGaps struct {
	// largest is the longest time between two lines the host received (either
	// console log): the guest-visible downtime.
	largest time.Duration
	// switchover is from the source's last line to the target's first.
	switchover time.Duration
	// guest is the largest step of the guest's own uptime between two lines.
	guest time.Duration
	// typical is the median time between two lines (the loop's own period).
	typical  time.Duration
	src, dst int // lines from the source's and the target's console
}

// analyzeTicks measures the gaps of ticks (the source's log is file src, the
// target's dst). The guest must have written on both, and its uptime must go
// on across the move: otherwise the target does not run the same guest.
func analyzeTicks(ticks []tick, src, dst int) (tickGaps, error) {
	var g tickGaps
	ticks = slices.Clone(ticks)
	slices.SortStableFunc(ticks, func(a, b tick) int { return a.at.Compare(b.at) })
	lastSrc, firstDst := -1, -1
	var steps []time.Duration
	for i, t := range ticks {
		switch {
		case t.file == src:
			g.src++
			lastSrc = i
		case t.file == dst:
			g.dst++
			if firstDst < 0 {
				firstDst = i
			}
		}
		if i == 0 {
			continue
		}
		d := t.at.Sub(ticks[i-1].at)
		steps = append(steps, d)
		g.largest = max(g.largest, d)
		g.guest = max(g.guest, time.Duration((t.uptime-ticks[i-1].uptime)*float64(time.Second)))
	}
	if g.src == 0 || g.dst == 0 {
		return g, fmt.Errorf("the guest's timestamp loop wrote %d lines on the source's console and %d on the target's; "+
			"it must write on both (is the guest running on the target?)", g.src, g.dst)
	}
	if firstDst < lastSrc {
		return g, fmt.Errorf("the target's console has lines from before the source's last one: two guests ran at once")
	}
	if ticks[firstDst].uptime < ticks[lastSrc].uptime {
		return g, fmt.Errorf("the guest's uptime went back from %.2f s to %.2f s across the move: the target does not run the same guest",
			ticks[lastSrc].uptime, ticks[firstDst].uptime)
	}
	g.switchover = ticks[firstDst].at.Sub(ticks[lastSrc].at)
	g.typical = stats.Median(steps)
	return g, nil
}
