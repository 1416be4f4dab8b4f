package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// hostInfo describes the machine the numbers come from.
type hostInfo struct {
	cpu   string // /proc/cpuinfo model name
	cores int
	accel string // kvm or tcg
	qemu  string // qemu-system-x86_64 --version, first line
	date  string
}

func describeHost(qemuBin string) hostInfo {
	h := hostInfo{cpu: "unknown CPU", cores: runtime.NumCPU(), accel: accelerator(), qemu: qemuVersion(qemuBin),
		date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

// accelerator is kvm when /dev/kvm can be opened for writing (as hvd decides), tcg otherwise.
func accelerator() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	return "kvm"
}

func (h hostInfo) short() string {
	return fmt.Sprintf("%s, %d cores, %s, %s", h.cpu, h.cores, strings.ToUpper(h.accel), h.qemu)
}

func hostHeader(h hostInfo) string {
	var b strings.Builder
	b.WriteString("Last run: " + h.date + "\n\n")
	b.WriteString("| host | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n| cores (nproc) | %d |\n| accelerator | %s |\n| QEMU | %s |\n",
		h.cpu, h.cores, h.accel, h.qemu)
	b.WriteString("\nEach section below says when and where it was measured; a run replaces only the sections it measured.")
	return wrapSection("host", b.String())
}

// Sections of RESULTS.md are delimited by <!-- bench:NAME --> and <!-- /bench:NAME -->.
func startMarker(name string) string { return "<!-- bench:" + name + " -->" }
func endMarker(name string) string   { return "<!-- /bench:" + name + " -->" }

func wrapSection(name, body string) string {
	return startMarker(name) + "\n" + strings.TrimSpace(body) + "\n" + endMarker(name)
}

const resultsTitle = "# hv benchmark results\n\nWritten by `make bench` (`go run ./bench`); see bench/README.md for what is measured and how to read it.\n"

// sectionOrder is where new sections go: host first, then the benchmarks in run order.
func sectionOrder() []string {
	order := []string{"host"}
	for _, b := range benchmarks {
		order = append(order, b.name)
	}
	return order
}

// replaceSections puts each of sections (already wrapped in markers) into doc: in place
// of the section of the same name when doc has it, else the host section after the
// title and the others at the end. Everything else in doc is kept as it is.
func replaceSections(doc string, sections map[string]string) string {
	if strings.TrimSpace(doc) == "" {
		doc = resultsTitle
	}
	names := sectionOrder()
	for n := range sections { // sections this program does not know still get written
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		sec, ok := sections[n]
		if !ok {
			continue
		}
		start, end := startMarker(n), endMarker(n)
		if i := strings.Index(doc, start); i >= 0 {
			if j := strings.Index(doc[i:], end); j >= 0 {
				doc = doc[:i] + sec + doc[i+j+len(end):]
				continue
			}
			// A start with no end: replace to the end of the file rather than keep half.
			doc = doc[:i] + sec + "\n"
			continue
		}
		if n == "host" {
			doc = insertAfterTitle(doc, sec)
			continue
		}
		doc = strings.TrimRight(doc, "\n") + "\n\n" + sec + "\n"
	}
	return doc
}

// insertAfterTitle puts sec right after the title bench writes, or at the top.
func insertAfterTitle(doc, sec string) string {
	if rest, ok := strings.CutPrefix(doc, resultsTitle); ok {
		return resultsTitle + "\n" + sec + "\n\n" + strings.TrimLeft(rest, "\n")
	}
	return sec + "\n\n" + doc
}

// updateResults rewrites path with sections replaced, atomically.
func updateResults(path string, sections map[string]string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	doc := replaceSections(string(old), sections)
	if !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".RESULTS-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(doc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// loadAvg is the host's 1-minute load average (/proc/loadavg), "?" when unknown: these
// benchmarks are short, and a busy host shows in them.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// Statistics.

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Min(d)
}

func maxDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

// percentile is the p-th percentile by nearest rank: the smallest value with at least
// p% of the values at or below it.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	k := max((p*len(s)+99)/100, 1)
	return s[min(k, len(s))-1]
}

func p90(d []time.Duration) time.Duration { return percentile(d, 90) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Formatting.

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
func ms(d time.Duration) string   { return d.Round(time.Millisecond).String() }
func mib(b uint64) string         { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func signedMiB(b float64) string  { return fmt.Sprintf("%+.1f MiB", b/(1<<20)) }
