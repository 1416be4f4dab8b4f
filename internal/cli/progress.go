package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/textsafe"
	"golang.org/x/term"
)

const barWidth = 24

// Progress shows an operation's progress: a bar redrawn in place on a terminal, plain lines
// otherwise (only when the stage changes or another 10% is done, so logs stay short).
type Progress struct {
	w   io.Writer
	tty bool
	now func() time.Time

	stage  string
	tenths int // last 10% step printed (plain mode)
	drawn  bool
	Bytes  bool // show the bytes done of the total (file copies)

	lastDone uint64
	lastAt   time.Time
	rate     float64 // bytes per second, smoothed
}

// NewProgress shows progress on w; now is the clock that rates are measured with.
func NewProgress(w io.Writer, now func() time.Time) *Progress {
	return &Progress{w: w, tty: IsTerminal(w), now: now, tenths: -1}
}

// IsTerminal reports whether v (a stream) is an *os.File on a terminal.
func IsTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Update is the WaitOperation callback.
func (p *Progress) Update(op api.Operation) {
	pr := op.Progress
	if pr == nil {
		return
	}
	stage := textsafe.Line(pr.Stage, 0) // hvd's text, which may quote a guest
	if stage == "" {
		stage = textsafe.Line(op.Kind, 0)
	}
	pct := -1
	if pr.Total > 0 {
		pct = int(min(pr.Done*100/pr.Total, 100))
	}
	p.measure(pr)
	if p.tty {
		p.draw(stage, pct, pr)
		return
	}
	if stage != p.stage || (pct >= 0 && pct/10 != p.tenths) {
		if pct >= 0 && p.Bytes {
			fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", stage, pct, HumanBytes(pr.Done), HumanBytes(pr.Total))
			p.tenths = pct / 10
		} else if pct >= 0 {
			fmt.Fprintf(p.w, "%s: %d%%\n", stage, pct)
			p.tenths = pct / 10
		} else {
			fmt.Fprintf(p.w, "%s\n", stage)
		}
	}
	p.stage = stage
}

// measure updates the transfer rate from successive byte counts.
func (p *Progress) measure(pr *api.Progress) {
	if pr.Unit != "bytes" {
		return
	}
	now := p.now()
	if !p.lastAt.IsZero() && pr.Done >= p.lastDone {
		if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
			r := float64(pr.Done-p.lastDone) / dt
			if p.rate == 0 {
				p.rate = r
			} else {
				p.rate = 0.7*p.rate + 0.3*r // smooth out uneven polls
			}
		}
	}
	p.lastDone, p.lastAt = pr.Done, now
}

// draw redraws the one-line bar: [=====>    ] 45% stage  12.3 MiB/s
func (p *Progress) draw(stage string, pct int, pr *api.Progress) {
	var b strings.Builder
	b.WriteString("\r[")
	if pct >= 0 {
		fill := pct * barWidth / 100
		b.WriteString(strings.Repeat("=", fill))
		if fill < barWidth {
			b.WriteString(">" + strings.Repeat(" ", barWidth-fill-1))
		}
		fmt.Fprintf(&b, "] %3d%% %s", pct, stage)
		if p.Bytes {
			b.WriteString("  " + HumanBytes(pr.Done) + "/" + HumanBytes(pr.Total))
		}
	} else {
		b.WriteString(strings.Repeat(" ", barWidth) + "] " + stage)
		if pr.Unit == "bytes" && pr.Done > 0 {
			b.WriteString("  " + HumanBytes(pr.Done))
		}
	}
	if p.rate > 0 {
		fmt.Fprintf(&b, "  %.1f MiB/s", p.rate/(1<<20))
	}
	b.WriteString("\x1b[K") // erase what a longer previous line left
	io.WriteString(p.w, b.String())
	p.drawn = true
	p.stage = stage
}

// Done clears the bar so that what follows starts on a clean line.
func (p *Progress) Done() {
	if p.tty && p.drawn {
		io.WriteString(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// TransferRedraw is the least time between two redraws of a file copy's progress.
const TransferRedraw = 100 * time.Millisecond

// Transfer returns a progress callback for a file copy (client.UploadFile and
// DownloadFile): bytes, percent and rate on stderr, unless --quiet (then nil). It may be
// called from another goroutine, but never concurrently; call its stop when the copy ends.
func (a *App) Transfer(label string) (update func(done, total int64), stop func()) {
	if a.Quiet {
		return nil, func() {}
	}
	p := NewProgress(a.Stderr, time.Now)
	p.Bytes = true
	var last time.Time
	update = func(done, total int64) {
		now := time.Now()
		if done < total && now.Sub(last) < TransferRedraw {
			return
		}
		last = now
		pr := &api.Progress{Stage: label, Done: uint64(max(done, 0)), Unit: "bytes"}
		if total >= 0 {
			pr.Total = uint64(total)
		}
		p.Update(api.Operation{Progress: pr})
	}
	return update, p.Done
}
