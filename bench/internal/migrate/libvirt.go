package migrate

import (
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/libvirt"
	"github.com/hvproject/hv/bench/internal/stats"
	"github.com/hvproject/hv/internal/machine"
)

// The libvirt side of the migration benchmark: two private libvirtds (two
// "hosts", bench/internal/libvirt) and `virsh migrate --copy-storage-all --tls
// --p2p` between them. The domain's disk and console have the same path in both
// daemons (as on two hosts), a directory that each daemon's mount namespace
// bind-mounts from a directory of its own.

const (
	lvDomain = "hvbench-mig"
	// lvPortBase: the daemons' migration_port_min/max (migration and NBD
	// streams) are lvPortBase+32*i .. +31, distinct so that they never race
	// for one port.
	lvPortBase = 49152
)

// lvQEMUConf is each daemon's addition to qemu.conf: the TLS certificates of
// the migration and NBD streams (the plain side's files and names) and its ports.
const lvQEMUConf = `migrate_tls_x509_cert_dir = %q
default_tls_x509_cert_dir = %q
migrate_tls_x509_verify = 1
migration_port_min = %d
migration_port_max = %d
`

// libvirtMigration is the libvirt side: two daemons and the domain, which
// moves back and forth.
type libvirtMigration struct {
	daemons  [2]*libvirt.Daemon
	vmDirs   [2]string // what each daemon sees at shared
	shared   string    // the domain's directory, as both daemons see it
	at       int       // the daemon running the domain
	diskSize int64
	// live is --live; without it libvirt mirrors the disks while the guest
	// runs and pauses the guest before the memory moves, which is what hv and
	// the plain side do where QEMU's TCG loses dirty pages.
	live    bool
	Version string
}

// setupLibvirtMigration starts the two daemons, boots the domain from a copy of
// image on the first, and starts the guest's timestamp loop.
func setupLibvirtMigration(ctx context.Context, e *harness.Env, cl *harness.Cleanup, work, image string) (*libvirtMigration, error) {
	m := &libvirtMigration{shared: filepath.Join(work, "libvirt-vm"),
		live: !machine.LosesDirtyPages(e.Host.Accel, qemuRelease(e.Host.QEMU))}
	tlsDir := filepath.Join(work, "libvirt-tls")
	if err := writePlainTLS(tlsDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.shared, 0o700); err != nil {
		return nil, err
	}
	// QEMU's command line names the shared path, not a daemon's directory:
	// this kills what a daemon's stop left.
	cl.Add(func() {
		for _, pid := range harness.PidsMentioning(m.shared) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for i := range m.daemons {
		dir := filepath.Join(work, "libvirt-"+string(rune('a'+i)))
		m.vmDirs[i] = filepath.Join(dir, "vm")
		if err := os.MkdirAll(m.vmDirs[i], 0o700); err != nil {
			return nil, err
		}
		uuid, err := randomUUID()
		if err != nil {
			return nil, err
		}
		lo := lvPortBase + 32*i
		o := libvirt.Options{HostUUID: uuid, QEMUConf: fmt.Sprintf(lvQEMUConf, tlsDir, tlsDir, lo, lo+31),
			Binds: [][2]string{{m.vmDirs[i], m.shared}}}
		if m.daemons[i], err = libvirt.StartWith(ctx, cl, dir, o); err != nil {
			return nil, fmt.Errorf("libvirtd %d: %w", i+1, err)
		}
	}
	m.Version = m.daemons[0].Version
	return m, m.boot(ctx, work, image)
}

// boot creates the domain on the first daemon and starts the timestamp loop.
func (m *libvirtMigration) boot(ctx context.Context, work, image string) error {
	disk := filepath.Join(m.vmDirs[0], "root.qcow2")
	if err := harness.CopyFile(image, disk); err != nil {
		return err
	}
	var err error
	if m.diskSize, err = virtualSize(ctx, disk); err != nil {
		return err
	}
	xmlFile := filepath.Join(work, "libvirt-domain.xml")
	if err := os.WriteFile(xmlFile, []byte(lvDomainXML(m.shared)), 0o600); err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := m.daemons[0].Virsh(ctx, plainStep, "create", xmlFile); err != nil {
		return err
	}
	if _, err := m.daemons[0].WaitAgent(ctx, lvDomain, guest.AgentLimit); err != nil {
		return err
	}
	if err := m.guestRun(ctx, tickLoopScript); err != nil {
		return fmt.Errorf("libvirt domain: starting the timestamp loop: %w", err)
	}
	harness.Logf("libvirt domain (%s, live=%v): agent answered after %s; timestamp loop started", m.Version, m.live, stats.Ms(time.Since(t0)))
	return nil
}

// lvDomainXML is the VM hvd runs for the benchmark (generation 1: pc, BIOS,
// -cpu max, 256 MiB, 1 vCPU, virtio-blk qcow2, agent channel, balloon, rng,
// console on the first serial port) as a libvirt domain; its disk and console
// are in dir.
func lvDomainXML(dir string) string {
	esc := html.EscapeString
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>%d</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <cpu mode='maximum'/>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <controller type='virtio-serial'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='virtio'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
`, lvDomain, guest.AgentMemMiB, guest.AgentCPUs, esc(filepath.Join(dir, "root.qcow2")), esc(filepath.Join(dir, "console.log")))
}

func randomUUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}

func (m *libvirtMigration) cur() *libvirt.Daemon { return m.daemons[m.at] }

// guestRun runs a shell script in the guest through libvirt's agent command.
func (m *libvirtMigration) guestRun(ctx context.Context, script string) error {
	return m.cur().AgentRun(ctx, lvDomain, guest.AgentCallWait, "sh", "-c", script)
}

func (m *libvirtMigration) pause(ctx context.Context) error {
	_, err := m.cur().Virsh(ctx, plainStep, "suspend", lvDomain)
	return err
}

func (m *libvirtMigration) resume(ctx context.Context) error {
	_, err := m.cur().Virsh(ctx, plainStep, "resume", lvDomain)
	return err
}

// migrateArgs is the virsh command of one move to the daemon at target: storage copied
// over NBD, TLS for both streams (the certificate's name given, as the
// destination is an address), QEMU listening and connecting on loopback,
// auto-converge as hv sets it, the source daemon talking to the target's.
func (m *libvirtMigration) migrateArgs(target string) []string {
	a := []string{"migrate", "--copy-storage-all", "--tls", "--tls-destination", plainTLSHost,
		"--migrateuri", "tcp://127.0.0.1", "--listen-address", "127.0.0.1", "--auto-converge", "--p2p"}
	if m.live {
		a = append(a, "--live")
	}
	return append(a, lvDomain, target)
}

// move migrates the domain to the other daemon and measures it as the plain
// side: t0 before the target's empty disk is created (libvirt needs it there,
// or a storage pool that holds it), t1 once virsh returned (the target runs
// the guest, the source's QEMU is gone) and the source's disk is removed.
func (m *libvirtMigration) move(ctx context.Context) (migRun, error) {
	var r migRun
	src, dst := m.at, 1-m.at
	for _, n := range []string{"root.qcow2", "console.log"} { // what the last move away left
		os.Remove(filepath.Join(m.vmDirs[dst], n))
	}
	wait, err := m.daemons[src].NextJobCompleted(ctx, lvDomain, plainMoveBy)
	if err != nil {
		return r, err
	}
	w := watchTicks(filepath.Join(m.vmDirs[src], "console.log"), filepath.Join(m.vmDirs[dst], "console.log"))
	harness.Sleep(ctx, tickLead)
	t0 := time.Now()
	disk := filepath.Join(m.vmDirs[dst], "root.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", disk, strconv.FormatInt(m.diskSize, 10)).CombinedOutput(); err != nil {
		w.finish()
		return r, fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	if _, err := m.daemons[src].Virsh(ctx, plainMoveBy, m.migrateArgs(m.daemons[dst].PeerURI())...); err != nil {
		w.finish()
		return r, err
	}
	m.at = dst
	err = os.Remove(filepath.Join(m.vmDirs[src], "root.qcow2"))
	r.total = time.Since(t0)
	if err != nil {
		w.finish()
		return r, err
	}
	js, err := wait()
	if err != nil {
		w.finish()
		return r, err
	}
	st := lvStats(js)
	r.downtime, r.ownTotal = st.ms("downtime"), st.ms("time_elapsed")
	r.memBytes, r.diskBytes = st.bytes("memory_processed"), st.bytes("disk_processed")
	harness.Sleep(ctx, tickTrail)
	if r.gaps, err = analyzeTicks(w.finish(), 0, 1); err != nil {
		return r, fmt.Errorf("libvirt: %w", err)
	}
	return r, m.checkRunning(ctx)
}

// checkRunning checks that the target runs the domain and the source has none.
func (m *libvirtMigration) checkRunning(ctx context.Context) error {
	out, err := m.cur().Virsh(ctx, plainStep, "domstate", lvDomain)
	if err != nil {
		return err
	}
	if st := strings.TrimSpace(out); st != "running" {
		return fmt.Errorf("libvirt: after the move the domain is %q on the target; want running", st)
	}
	out, err = m.daemons[1-m.at].Virsh(ctx, plainStep, "list", "--all", "--name")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("libvirt: after the move the source still has %q", strings.TrimSpace(out))
	}
	return nil
}

// lvStats reads libvirt's job statistics.
type lvStats libvirt.JobStats

func (s lvStats) ms(k string) time.Duration {
	v, _ := strconv.ParseInt(s[k], 10, 64)
	return time.Duration(v) * time.Millisecond
}

func (s lvStats) bytes(k string) uint64 {
	v, _ := strconv.ParseUint(s[k], 10, 64)
	return v
}
