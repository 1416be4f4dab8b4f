package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/hvside"
	"github.com/hvproject/hv/bench/internal/plain"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// Copy benchmark settings.
const (
	copySize      = 20 << 20 // bytes of random data
	copyRuns      = 3        // per direction and side, after one warm-up round
	copyChunk     = 1 << 20  // plain side: bytes per guest-file-write / guest-file-read, as hv's agent client
	copyGuestPath = "/tmp/hvbench-copy"
	copyLimit     = 10 * time.Minute // one transfer
)

type copyResult struct {
	hvUp, hvDown, plainUp, plainDown         []time.Duration
	warmHVUp, warmHVDown, warmPlUp, warmPlDn time.Duration
	sum                                      string
	heartbeat                                string
	load                                     [2]string // host load average at start and end
}

// copySide is one side's way to move the file and to ask the guest for its SHA-256.
type copySide struct {
	name       string
	upload     func(ctx context.Context, src string) error
	download   func(ctx context.Context, dst string) error
	guestSum   func(ctx context.Context) (string, error)
	up, down   *[]time.Duration
	warmUp, wd *time.Duration
}

// runCopy measures upload and download of a 20 MiB random file into a guest: through
// hv (client.UploadFile / DownloadFile, what `hv vm cp` does) and through plain
// guest-file-* calls on the agent socket of a QEMU started by hand. Every copy is
// verified by SHA-256, on the guest with sha256sum, on the host by hashing.
func runCopy(ctx context.Context, e *harness.Env) (string, error) {
	cl := &harness.Cleanup{}
	e.Cleanup.Add(cl.Run)
	defer cl.Run()

	const name = "copy1"
	h, _, err := hvside.StartAgentVM(ctx, e, cl, name)
	if err != nil {
		return "", err
	}
	r := copyResult{heartbeat: h.Heartbeat, load: [2]string{results.LoadAvg()}}
	src := filepath.Join(h.Root, "copy-src")
	if r.sum, err = writeRandomFile(src, copySize); err != nil {
		return "", err
	}
	dst := filepath.Join(h.Root, "copy-dst")

	hv := copySide{name: "hv", up: &r.hvUp, down: &r.hvDown, warmUp: &r.warmHVUp, wd: &r.warmHVDown,
		upload: func(ctx context.Context, src string) error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			_, err = h.Client.UploadFile(ctx, name, copyGuestPath, 0o644, f, st.Size(), nil)
			return err
		},
		download: func(ctx context.Context, dst string) error {
			f, err := os.Create(dst)
			if err != nil {
				return err
			}
			if _, err := h.Client.DownloadFile(ctx, name, copyGuestPath, f, nil); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
		guestSum: func(ctx context.Context) (string, error) {
			res, err := hvside.Exec(ctx, h.Client, name, "sha256sum", copyGuestPath)
			if err != nil {
				return "", err
			}
			return firstField(res.Stdout), nil
		},
	}
	if err := copySeries(ctx, hv, src, dst, r.sum); err != nil {
		return "", err
	}
	if err := hvside.StopAgentVM(ctx, h, name); err != nil {
		return "", err
	}

	v, err := plain.StartKernelVM(ctx, e, cl, filepath.Join(h.Root, "plain-copy"))
	if err != nil {
		return "", err
	}
	defer v.Stop()
	plain := copySide{name: "plain", up: &r.plainUp, down: &r.plainDown, warmUp: &r.warmPlUp, wd: &r.warmPlDn,
		upload: func(ctx context.Context, src string) error {
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			return v.Agent.WriteFile(ctx, guest.AgentCallWait, copyGuestPath, data, copyChunk)
		},
		download: func(ctx context.Context, dst string) error {
			f, err := os.Create(dst)
			if err != nil {
				return err
			}
			if _, err := v.Agent.ReadFile(ctx, guest.AgentCallWait, copyGuestPath, f, copyChunk); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
		guestSum: func(ctx context.Context) (string, error) {
			st, err := v.Agent.Run(ctx, guest.AgentCallWait, "sha256sum", copyGuestPath)
			if err != nil {
				return "", err
			}
			out, _ := base64.StdEncoding.DecodeString(st.OutData)
			if st.ExitCode != 0 || st.Signal != 0 {
				errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
				return "", fmt.Errorf("sha256sum in the guest: exit code %d, signal %d: %s", st.ExitCode, st.Signal, errOut)
			}
			return firstField(out), nil
		},
	}
	if err := copySeries(ctx, plain, src, dst, r.sum); err != nil {
		return "", err
	}
	r.load[1] = results.LoadAvg()
	return copySection(e, r), nil
}

// copySeries runs one warm-up round and copyRuns measured rounds of upload then
// download, each verified: a SHA-256 that differs fails the benchmark.
func copySeries(ctx context.Context, s copySide, src, dst, want string) error {
	for i := 0; i <= copyRuns; i++ {
		run := fmt.Sprintf("run %d", i)
		if i == 0 {
			run = "warm-up"
		}
		cctx, cancel := context.WithTimeout(ctx, copyLimit)
		t0 := time.Now()
		err := s.upload(cctx, src)
		up := time.Since(t0)
		cancel()
		if err != nil {
			return fmt.Errorf("%s upload %s: %w", s.name, run, err)
		}
		got, err := s.guestSum(ctx)
		if err != nil {
			return fmt.Errorf("%s upload %s: checking the guest's copy: %w", s.name, run, err)
		}
		if got != want {
			return fmt.Errorf("%s upload %s: the guest's %s has SHA-256 %q, the source %s", s.name, run, copyGuestPath, got, want)
		}

		os.Remove(dst)
		cctx, cancel = context.WithTimeout(ctx, copyLimit)
		t0 = time.Now()
		err = s.download(cctx, dst)
		down := time.Since(t0)
		cancel()
		if err != nil {
			return fmt.Errorf("%s download %s: %w", s.name, run, err)
		}
		got, err = fileSHA256(dst)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s download %s: the host's copy has SHA-256 %s, the guest file %s", s.name, run, got, want)
		}
		os.Remove(dst)
		if i == 0 {
			*s.warmUp, *s.wd = up, down
		} else {
			*s.up, *s.down = append(*s.up, up), append(*s.down, down)
		}
		harness.Logf("copy %s %s: upload %s (%s), download %s (%s), SHA-256 verified", s.name, run,
			stats.Secs(up), mibps(copySize, up), stats.Secs(down), mibps(copySize, down))
	}
	return nil
}

func copySection(e *harness.Env, r copyResult) string {
	var b strings.Builder
	hb := "hvd's default heartbeat interval"
	if r.heartbeat != "" {
		hb = "heartbeat every " + r.heartbeat
	}
	size := fmt.Sprintf("%d MiB", copySize>>20)
	fmt.Fprintf(&b, "## File copy throughput: `hv vm cp` vs plain guest-file-*\n\n")
	fmt.Fprintf(&b, "Measured %s on %s. A %s file of random bytes, copied into the guest's `%s` (tmpfs) and back; "+
		"%d runs of each direction and side after one warm-up round (not counted); each run uploads, then downloads. %s "+
		"One VM at a time: first hv's (all hv runs), then the plain one.\n\n",
		e.Host.Date, e.Host.Short(), size, copyGuestPath, copyRuns, guest.AgentText())
	b.WriteString("- **hv**: hvd with a fresh root (" + hb + "); the Go client's `UploadFile` (from the host file, mode 0644) " +
		"and `DownloadFile` (into a host file), what `hv vm cp` does. t0 just before the call, t1 when it returned. " +
		"hvd moves the data with guest-file-open/write/close and open/seek/read/close, 1 MiB a call, and after an upload " +
		"runs `chmod` in the guest (guest-exec); the client checks hvd's SHA-256 of what passed.\n")
	fmt.Fprintf(&b, "- **plain**: the same guest on a QEMU command line typed by hand and the benchmark's own raw agent "+
		"client (as in the exec benchmark): upload = read the host file, `guest-file-open` (w), `guest-file-write` of "+
		"%d MiB base64 chunks, `guest-file-close`; download = `guest-file-open` (r), `guest-file-read` of %d MiB until eof "+
		"into a host file, `guest-file-close`.\n", copyChunk>>20, copyChunk>>20)
	b.WriteString("- **verified**, outside the timing, after every copy (warm-up included): the guest file's `sha256sum` " +
		"(run by guest-exec: through hv's exec API on the hv side, raw on the plain side) and the host copy's SHA-256 " +
		"must equal the source's, or the benchmark fails. All did.\n\n")
	b.WriteString("| direction | hv median | hv min – max | plain median | plain min – max | hv / plain |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, d := range []struct {
		name      string
		hv, plain []time.Duration
	}{{"upload (host → guest)", r.hvUp, r.plainUp}, {"download (guest → host)", r.hvDown, r.plainDown}} {
		// Throughput is size / time, so the fastest run is the shortest time.
		fmt.Fprintf(&b, "| %s | %s | %s – %s | %s | %s – %s | **%.2f** |\n", d.name,
			mibps(copySize, stats.Median(d.hv)), mibps(copySize, stats.Max(d.hv)), mibps(copySize, stats.Min(d.hv)),
			mibps(copySize, stats.Median(d.plain)), mibps(copySize, stats.Max(d.plain)), mibps(copySize, stats.Min(d.plain)),
			stats.Ratio(stats.Median(d.plain), stats.Median(d.hv)))
	}
	b.WriteString("\n`hv / plain` is hv's median throughput over plain's (below 1: hv is slower). " +
		"Both sides are bound by the agent (base64 JSON over virtio-serial, and under TCG a slow guest); " +
		"hv adds the HTTP stream through hvd, hashing on both ends, its extra agent calls (seeks, `chmod`) " +
		"and its heartbeat pings, which take turns with the transfer on the one agent connection. " +
		"Host load average (1 min) when the runs began / ended: " + r.load[0] + " / " + r.load[1] + " (2 cores; the benchmark's own VM and processes count in it).\n\n")
	b.WriteString("Every run, seconds, upload / download:\n\n")
	fmt.Fprintf(&b, "- hv: warm-up %s / %s; runs %s\n", stats.Secs(r.warmHVUp), stats.Secs(r.warmHVDown), pairs(r.hvUp, r.hvDown))
	fmt.Fprintf(&b, "- plain: warm-up %s / %s; runs %s\n", stats.Secs(r.warmPlUp), stats.Secs(r.warmPlDn), pairs(r.plainUp, r.plainDown))
	return results.Wrap("copy", b.String())
}

func pairs(a, b []time.Duration) string {
	var s []string
	for i := range a {
		s = append(s, stats.Secs(a[i])+" / "+stats.Secs(b[i]))
	}
	return strings.Join(s, ", ")
}

// mibps is n bytes moved in d, as MiB/s.
func mibps(n int64, d time.Duration) string {
	if d <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

// writeRandomFile fills path with n random bytes and returns their hex SHA-256.
func writeRandomFile(path string, n int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, n); err != nil {
		f.Close()
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// firstField is the first word of sha256sum's output: the hex digest.
func firstField(out []byte) string {
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}
