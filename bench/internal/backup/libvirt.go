package backup

import (
	"context"
	"errors"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/libvirt"
	"github.com/hvproject/hv/bench/internal/results"
	"github.com/hvproject/hv/bench/internal/stats"
)

// libvirt side: a private libvirtd (package libvirt), the same guest as a transient
// domain, virsh backup-begin in push mode into a new qcow2 file per backup.

// bkDomainXML is the hv VM's machine for libvirt: generation 1 (pc, SeaBIOS) booting
// from boot (virtio vda), the data disk as virtio vdb, the agent channel, no USB, no
// balloon.
func bkDomainXML(e *harness.Env, boot, data, serial string) string {
	typ, cpu := "qemu", "<cpu mode='maximum'/>"
	if e.Host.Accel == "kvm" {
		typ, cpu = "kvm", "<cpu mode='host-passthrough'/>"
	}
	esc := html.EscapeString
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>%d</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  %s
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial'/>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`, typ, bkDomain, bkMemMiB, bkCPUs, cpu, esc(boot), esc(data), esc(serial))
}

// bkBackupXML is a push-mode backup of vda and vdb into new qcow2 files named
// prefix-vda.qcow2 and prefix-vdb.qcow2, incremental since checkpoint since when not "".
func bkBackupXML(prefix, since string) string {
	inc := ""
	if since != "" {
		inc = "<incremental>" + html.EscapeString(since) + "</incremental>\n  "
	}
	var disks strings.Builder
	for _, d := range []string{"vda", "vdb"} {
		fmt.Fprintf(&disks, `    <disk name='%s' backup='yes' type='file'>
      <driver type='qcow2'/>
      <target file='%s'/>
    </disk>
`, d, html.EscapeString(prefix+"-"+d+".qcow2"))
	}
	return fmt.Sprintf("<domainbackup mode='push'>\n  %s<disks>\n%s  </disks>\n</domainbackup>\n", inc, disks.String())
}

func bkCheckpointXML(name string) string {
	return fmt.Sprintf(`<domaincheckpoint>
  <name>%s</name>
  <disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='bitmap'/></disks>
</domaincheckpoint>
`, html.EscapeString(name))
}

// bkLVSide is libvirt's domain and how to back it up.
type bkLVSide struct {
	r          *bkResult
	e          *harness.Env
	l          *libvirt.Daemon
	jobs       *libvirt.Jobs
	dir        string
	boot, data string
	prev       string // the newest checkpoint, the incrementals' <incremental>
	n          int    // incrementals so far
}

func (s *bkLVSide) alive() bool { return s.r.lv.err == nil }

func (s *bkLVSide) fail(step string, err error) {
	s.r.lv.err = fmt.Errorf("%s: %w", step, err)
	harness.Logf("libvirt: %v", s.r.lv.err)
}

// bkStartLibvirt starts the private libvirtd and the domain (a copy of the boot
// image and data, the qcow2 data disk), checks its disks, follows its job events
// and makes the checkpoint the first incremental starts from (not timed).
func bkStartLibvirt(ctx context.Context, e *harness.Env, cl *harness.Cleanup, r *bkResult, dir, data string) (*bkLVSide, error) {
	s := &bkLVSide{r: r, e: e, dir: dir, data: data, boot: filepath.Join(dir, "boot.qcow2")}
	var err error
	if s.l, err = libvirt.Start(ctx, cl, dir); err != nil {
		return s, fmt.Errorf("libvirtd: %w", err)
	}
	r.libvirt = s.l.Version
	if err := harness.CopyFile(filepath.Join(e.Guest, bkBootImage), s.boot); err != nil {
		return s, fmt.Errorf("boot disk copy: %w", err)
	}
	serial := filepath.Join(dir, "serial.log")
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(bkDomainXML(e, s.boot, data, serial)), 0o644); err != nil {
		return s, err
	}
	t0 := time.Now()
	if _, err := s.l.Virsh(ctx, time.Minute, "create", xmlPath); err != nil {
		return s, err
	}
	if _, err := s.l.WaitAgent(ctx, bkDomain, guest.AgentLimit); err != nil {
		return s, fmt.Errorf("boot: %w; %s", err, harness.Tail(serial))
	}
	harness.Logf("libvirt domain %s: agent answered after %s", bkDomain, stats.Ms(time.Since(t0)))
	if err := s.l.AgentRun(ctx, bkDomain, time.Minute, "/bin/sh", "-c", bkCheckScript); err != nil {
		return s, fmt.Errorf("disks in the guest: %w", err)
	}
	if s.jobs, err = s.l.WatchJobs(ctx, cl, bkDomain); err != nil {
		return s, fmt.Errorf("virsh event: %w", err)
	}
	harness.Sleep(ctx, time.Second) // let virsh event register before the first job
	if _, err := s.l.Virsh(ctx, time.Minute, "checkpoint-create-as", bkDomain, "--name", "cp0",
		"--diskspec", "vda,checkpoint=bitmap", "--diskspec", "vdb,checkpoint=bitmap"); err != nil {
		return s, err
	}
	s.prev = "cp0"
	return s, nil
}

// backup is one backup-begin (with a new checkpoint cp when not ""), timed until
// libvirt's job-completed event, then until the targets are also fdatasynced. The
// bytes are libvirt's own count (the job's disk_processed), or 0.
func (s *bkLVSide) backup(ctx context.Context, name, since, cp string) (bkRun, error) {
	prefix := filepath.Join(s.dir, name)
	targets := []string{prefix + "-vda.qcow2", prefix + "-vdb.qcow2"}
	bx := filepath.Join(s.dir, name+"-backup.xml")
	if err := os.WriteFile(bx, []byte(bkBackupXML(prefix, since)), 0o644); err != nil {
		return bkRun{}, err
	}
	args := []string{"backup-begin", bkDomain, bx}
	if cp != "" {
		cx := filepath.Join(s.dir, name+"-checkpoint.xml")
		if err := os.WriteFile(cx, []byte(bkCheckpointXML(cp)), 0o644); err != nil {
			return bkRun{}, err
		}
		args = append(args, cx)
	}
	for drained := false; !drained; {
		select {
		case <-s.jobs.Done:
		default:
			drained = true
		}
	}
	s.r.dropped(bkDrop(s.boot, s.data))
	t0 := time.Now()
	if _, err := s.l.Virsh(ctx, time.Minute, args...); err != nil {
		return bkRun{}, err
	}
	var ev string
	select {
	case ev = <-s.jobs.Done:
		if ev == "" {
			return bkRun{}, errors.New("virsh event ended before the job completed")
		}
	case <-time.After(bkOpLimit):
		return bkRun{}, fmt.Errorf("no job-completed event within %s", bkOpLimit)
	case <-ctx.Done():
		return bkRun{}, ctx.Err()
	}
	d := time.Since(t0)
	for _, t := range targets {
		if err := fdatasync(t); err != nil {
			return bkRun{}, fmt.Errorf("the backup's target: %w (event: %s)", err, ev)
		}
	}
	ds := time.Since(t0)
	info, _ := s.l.Virsh(ctx, time.Minute, "domjobinfo", bkDomain, "--completed", "--keep-completed")
	if !strings.Contains(info, "Completed") {
		return bkRun{}, fmt.Errorf("the backup job did not complete: %s; event: %s", strings.Join(strings.Fields(info), " "), ev)
	}
	raw, _ := s.l.Virsh(ctx, time.Minute, "domjobinfo", bkDomain, "--completed", "--rawstats")
	if s.e.Verbose {
		harness.Logf("libvirt domjobinfo --completed --rawstats: %s", strings.Join(strings.Fields(raw), " "))
	}
	for _, t := range targets {
		os.Remove(t)
	}
	return bkRun{d: d, sync: ds, bytes: bkJobBytes(raw)}, nil
}

// full is run i of the full backups: push mode, no checkpoint.
func (s *bkLVSide) full(ctx context.Context, i int) {
	run, err := s.backup(ctx, fmt.Sprintf("full%d", i), "", "")
	if err != nil {
		s.fail("full backup (backup-begin)", err)
		return
	}
	// libvirt's disk_processed of a full backup counts every byte of both disks,
	// the boot disk's unallocated space too; the disk data is what hv read of the
	// same disks (their allocated data), so that counts.
	switch {
	case len(s.r.hvAPI.full) > 0:
		if run.bytes != 0 {
			s.r.lv.note("a full backup's job reports %s processed (both disks whole, unallocated space included); "+
				"its data read is counted as hv's (the disks' allocated data)", stats.MiB(uint64(run.bytes)))
		}
		run.bytes = bkBytes(s.r.hvAPI.full)
	case run.bytes == 0:
		run.bytes = bkDiskBytes
		s.r.lv.note("libvirt did not report the bytes its job read (disk_processed); data read counted as the data disk's size")
	}
	s.r.lv.full = append(s.r.lv.full, run)
	harness.Logf("libvirt full %d/%d: %s (targets fdatasynced after %s), %s", i, bkRuns, stats.Ms(run.d), stats.Ms(run.sync), stats.MiBs(stats.Throughput(run.bytes, run.d)))
}

// write changes pct% of the data disk in the guest (not timed in the backups).
func (s *bkLVSide) write(ctx context.Context, round, pct int) {
	t0 := time.Now()
	if err := s.l.AgentRun(ctx, bkDomain, bkWriteLimit, "/bin/sh", "-c", bkChangeScript(round, pct)); err != nil {
		s.fail(fmt.Sprintf("writing %d%% of the data disk in the guest", pct), err)
		return
	}
	s.r.writeLV[pct] = append(s.r.writeLV[pct], time.Since(t0))
}

// incremental: backup-begin with <incremental> the newest checkpoint and a new
// checkpoint; the older one is deleted afterwards (not timed), as hv keeps only its
// newest reference point.
func (s *bkLVSide) incremental(ctx context.Context, round, pct int) {
	s.n++
	cp := fmt.Sprintf("cp%d", s.n)
	run, err := s.backup(ctx, fmt.Sprintf("inc%d", s.n), s.prev, cp)
	if err != nil {
		s.fail(fmt.Sprintf("incremental backup (%d%%, backup-begin with <incremental>%s</incremental>)", pct, s.prev), err)
		return
	}
	if run.bytes == 0 {
		run.bytes = int64(bkChunks(pct)) * bkChunk
		s.r.lv.note("libvirt did not report the bytes its job read (disk_processed); data read counted as the chunks the guest changed")
	}
	s.r.lv.incr[pct] = append(s.r.lv.incr[pct], run)
	harness.Logf("libvirt incremental round %d, %d%%: %s (targets fdatasynced after %s), %s read, %s",
		round, pct, stats.Ms(run.d), stats.Ms(run.sync), stats.MiB(uint64(run.bytes)), stats.MiBs(stats.Throughput(run.bytes, run.d)))
	if _, err := s.l.Virsh(ctx, time.Minute, "checkpoint-delete", bkDomain, s.prev); err != nil {
		s.r.lv.note("checkpoint-delete %s: %s", s.prev, results.LastLine(err.Error()))
	}
	s.prev = cp
}

// bkJobBytes is disk_processed (bytes) from `virsh domjobinfo --rawstats`, or 0.
func bkJobBytes(raw string) int64 {
	for _, line := range strings.Split(raw, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "disk_processed" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return 0
}
