package results

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/qemu"
)

// FSOf names the file system dir is on: "ext4 on /dev/vda (/)", from /proc/self/mountinfo.
func FSOf(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown file system"
	}
	best, what := -1, "unknown file system"
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > best {
			best, what = len(mp), fmt.Sprintf("%s on %s (%s)", g[0], g[1], mp)
		}
	}
	return what
}

// qemuVersion is the first line of qemu-system-x86_64 --version.
func qemuVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// Host describes the machine the numbers come from.
type Host struct {
	CPU   string // /proc/cpuinfo model name
	Cores int
	Accel string // kvm or tcg
	QEMU  string // qemu-system-x86_64 --version, first line
	Date  string
}

// DescribeHost reads this machine's CPU, cores, accelerator and QEMU version.
func DescribeHost(qemuBin string) Host {
	h := Host{CPU: "unknown CPU", Cores: runtime.NumCPU(), Accel: accelerator(qemuBin), QEMU: qemuVersion(qemuBin),
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return h
}

// accelerator is what hvd would choose here: kvm when a probe guest runs on
// it (a /dev/kvm that opens may still fail every real guest), tcg otherwise.
func accelerator(qemuBin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*qemu.ProbeTimeout)
	defer cancel()
	a, err := qemu.ChooseAccel(ctx, qemu.AccelAuto, qemu.HostProber{Binary: qemuBin})
	if err != nil {
		return qemu.AccelTCG
	}
	return a.Name
}

// Short is the host on one line, for a section's "Measured ... on ...".
func (h Host) Short() string {
	return fmt.Sprintf("%s, %d cores, %s, %s", h.CPU, h.Cores, strings.ToUpper(h.Accel), h.QEMU)
}

// HostHeader is the host section of RESULTS.md.
func HostHeader(h Host) string {
	var b strings.Builder
	b.WriteString("Last run: " + h.Date + "\n\n")
	b.WriteString("| host | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %s |\n| cores (nproc) | %d |\n| accelerator | %s |\n| QEMU | %s |\n",
		h.CPU, h.Cores, h.Accel, h.QEMU)
	b.WriteString("\nEach section below says when and where it was measured; a run replaces only the sections it measured.")
	return Wrap("host", b.String())
}

// LoadAvg is the host's 1-minute load average (/proc/loadavg), "?" when unknown: these
// benchmarks are short, and a busy host shows in them.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}
