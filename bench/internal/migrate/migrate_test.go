package migrate

import (
	"crypto/x509"
	"encoding/pem"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/results"
)

func ticksAt(t0 time.Time, file int, msOffsets ...int) []tick {
	var out []tick
	for _, o := range msOffsets {
		out = append(out, tick{at: t0.Add(time.Duration(o) * time.Millisecond), uptime: 100 + float64(o)/1000, file: file})
	}
	return out
}

func TestAnalyzeTicks(t *testing.T) {
	t0 := time.Now()
	ticks := append(ticksAt(t0, 0, 0, 10, 20, 30, 40), ticksAt(t0, 1, 290, 300, 310)...)
	g, err := analyzeTicks(ticks, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if g.largest != 250*time.Millisecond || g.switchover != 250*time.Millisecond || g.src != 5 || g.dst != 3 {
		t.Errorf("gaps %+v, want largest = switch-over = 250ms, 5 + 3 lines", g)
	}
	if g.typical != 10*time.Millisecond {
		t.Errorf("typical %s, want 10ms", g.typical)
	}

	// A stall on the source before the switch-over is the largest gap.
	ticks = append(ticksAt(t0, 0, 0, 500, 510), ticksAt(t0, 1, 600, 610)...)
	if g, err = analyzeTicks(ticks, 0, 1); err != nil || g.largest != 500*time.Millisecond || g.switchover != 90*time.Millisecond {
		t.Errorf("gaps %+v (%v), want largest 500ms, switch-over 90ms", g, err)
	}

	for name, bad := range map[string][]tick{
		"no target lines":  ticksAt(t0, 0, 0, 10),
		"no source lines":  ticksAt(t0, 1, 0, 10),
		"interleaved":      append(ticksAt(t0, 0, 0, 20), ticksAt(t0, 1, 10)...),
		"uptime goes back": append(ticksAt(t0, 0, 0, 500), tick{at: t0.Add(time.Second), uptime: 1, file: 1}),
	} {
		if _, err := analyzeTicks(bad, 0, 1); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseTicks(t *testing.T) {
	at := time.Now()
	got := parseTicks([]byte("[  1.0] kernel says\r\nhvtick 12.34\r\nnoise hvtick 12.35\nhvtick x\n"), at, 1)
	if len(got) != 2 || got[0].uptime != 12.34 || got[1].uptime != 12.35 || got[0].file != 1 {
		t.Errorf("parseTicks: %+v", got)
	}
}

// The watcher skips what a log held before, joins lines split across reads,
// waits for a log that does not exist yet, and reads a replaced one from its start.
func TestTickFileRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "console.log")
	os.WriteFile(p, []byte("hvtick 1.00\n"), 0o600)
	f := &tickFile{path: p}
	fi, _ := os.Stat(p)
	f.fi, f.offset = fi, fi.Size()
	appendTo := func(s string) {
		fh, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		fh.WriteString(s)
		fh.Close()
	}
	appendTo("hvtick 2.0")
	if got := f.read(0); len(got) != 0 {
		t.Errorf("half a line: %+v", got)
	}
	appendTo("0\nhvtick 2.01\n")
	if got := f.read(0); len(got) != 2 || got[0].uptime != 2.00 || got[1].uptime != 2.01 {
		t.Errorf("after the rest: %+v", got)
	}
	os.Remove(p)
	if got := f.read(0); got != nil {
		t.Errorf("removed file: %+v", got)
	}
	os.WriteFile(p, []byte("hvtick 3.00\n"), 0o600)
	if got := f.read(0); len(got) != 1 || got[0].uptime != 3.00 {
		t.Errorf("new file: %+v", got)
	}
	missing := &tickFile{path: filepath.Join(dir, "later.log")}
	if got := missing.read(1); got != nil {
		t.Errorf("missing file: %+v", got)
	}
}

func TestWritePlainTLS(t *testing.T) {
	dir := t.TempDir()
	if err := writePlainTLS(dir); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}
	roots := x509.NewCertPool()
	roots.AddCert(load("ca-cert.pem"))
	for _, n := range []string{"server-cert.pem", "client-cert.pem"} {
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := load(n).Verify(x509.VerifyOptions{Roots: roots, DNSName: plainTLSHost, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				t.Errorf("%s for %v: %v", n, u, err)
			}
		}
	}
	for _, n := range []string{"server-key.pem", "client-key.pem"} {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", n, fi, err)
		}
	}
}

func TestMigArgs(t *testing.T) {
	src := migArgs("tcg", "/d", "pc", false)
	dst := migArgs("tcg", "/d", "pc-i440fx-7.2", true)
	if slices.Contains(src, "-incoming") || !slices.Contains(dst, "-incoming") || !slices.Contains(dst, "pc-i440fx-7.2") {
		t.Errorf("source %v\ntarget %v", src, dst)
	}
	if !slices.Contains(src, "-S") || !strings.Contains(strings.Join(src, " "), "logfile=/d/console.log") {
		t.Errorf("source %v: want -S and the console log", src)
	}
}

func TestMigrateSection(t *testing.T) {
	run := func(total, down, gap int) migRun {
		return migRun{total: time.Duration(total) * time.Millisecond, downtime: time.Duration(down) * time.Millisecond,
			gaps: tickGaps{largest: time.Duration(gap) * time.Millisecond, switchover: time.Duration(gap) * time.Millisecond}}
	}
	r := &migResult{
		hv:    &migSide{name: "hv", runs: map[string][]migRun{"idle": {run(2000, 100, 250)}, "dirty": {run(4000, 200, 500)}}},
		plain: &migSide{name: "plain", runs: map[string][]migRun{"idle": {run(1900, 100, 240)}, "dirty": {run(3000, 150, 400)}}},
	}
	env := &harness.Env{Host: results.Host{CPU: "x", Date: "d"}}
	r.lvErr = "libvirtd not found"
	if sec := migrateSection(env, r); !strings.Contains(sec, "- **libvirt** was not measured: libvirtd not found.") ||
		!strings.Contains(sec, "| total time | 2s (2s–2s) | 1.9s (1.9s–1.9s) | — | 1.05 | — |") {
		t.Errorf("section without libvirt:\n%s", sec)
	}
	r.libvirt = &migSide{name: "libvirt", runs: map[string][]migRun{"idle": {run(2500, 120, 260)}, "dirty": {run(5000, 300, 600)}}}
	r.lvVersion = "Compiled against library: libvirt 9.0.0; Using library: libvirt 9.0.0; Running hypervisor: QEMU 7.2.22"
	sec := migrateSection(env, r)
	for _, want := range []string{
		"<!-- bench:migrate -->",
		"| total time | 2s (2s–2s) | 1.9s (1.9s–1.9s) | 2.5s (2.5s–2.5s) | 1.05 | 0.80 |",
		"- **libvirt** (libvirt 9.0.0): two private libvirtds",
		"without `--live`",
		"- dirty, libvirt: 5000/300/600/600",
		"idle guest, total time within 10% of plain's: hv 2s, plain 1.9s, hv / plain 1.05: **met**",
		"dirty guest, total time within 10% of plain's: hv 4s, plain 3s, hv / plain 1.33: **not met**",
		"idle guest, hv's guest-visible downtime (largest gap) at most 300 ms: 250ms: **met**",
		"- dirty, plain: 3000/150/400/400",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("section lacks %q:\n%s", want, sec)
		}
	}
}

func TestLibvirtMigrationArgs(t *testing.T) {
	m := &libvirtMigration{}
	got := strings.Join(m.migrateArgs("qemu+unix:///system?socket=/b"), " ")
	for _, want := range []string{"--copy-storage-all", "--tls --tls-destination " + plainTLSHost, "--p2p", "--auto-converge"} {
		if !strings.Contains(got, want) {
			t.Errorf("virsh %s: lacks %s", got, want)
		}
	}
	if strings.Contains(got, "--live") {
		t.Errorf("virsh %s: --live where the guest must be paused for the memory", got)
	}
	m.live = true
	if got := m.migrateArgs("qemu+unix:///system?socket=/a"); !slices.Contains(got, "--live") || got[len(got)-2] != lvDomain {
		t.Errorf("virsh %v: want --live, then the domain and the target's URI", got)
	}
}

func TestLvDomainXML(t *testing.T) {
	var dom struct {
		Name   string `xml:"name"`
		Memory int    `xml:"memory"`
		OS     struct {
			Type struct {
				Machine string `xml:"machine,attr"`
			} `xml:"type"`
		} `xml:"os"`
		CPU struct {
			Mode string `xml:"mode,attr"`
		} `xml:"cpu"`
		Devices struct {
			Disk struct {
				Source struct {
					File string `xml:"file,attr"`
				} `xml:"source"`
			} `xml:"disk"`
			Serial struct {
				Source struct {
					Path string `xml:"path,attr"`
				} `xml:"source"`
			} `xml:"serial"`
		} `xml:"devices"`
	}
	text := lvDomainXML("/w/vm")
	if err := xml.Unmarshal([]byte(text), &dom); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if dom.Name != lvDomain || dom.Memory != 256 || dom.OS.Type.Machine != "pc" || dom.CPU.Mode != "maximum" ||
		dom.Devices.Disk.Source.File != "/w/vm/root.qcow2" || dom.Devices.Serial.Source.Path != "/w/vm/console.log" {
		t.Errorf("domain %+v", dom)
	}
}
