// Package libvirt runs the private libvirtd that the checkpoint and backup
// benchmarks compare hv with, and drives it and its domains through virsh.
package libvirt

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/bench/internal/guest"
	"github.com/hvproject/hv/bench/internal/harness"
	"github.com/hvproject/hv/bench/internal/rawagent"
)

// Daemon is a private libvirtd, run by the benchmark so that it needs no init
// system, changes no host configuration and leaves nothing running:
//
//   - libvirtd runs in a mount namespace of its own (unshare --mount) where the
//     benchmark's directories are bind-mounted over /etc/libvirt (a qemu.conf that
//     runs QEMU as root, logs to files, no security driver, no cgroups),
//     /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt;
//   - Debian 12's libvirt (9.0) resolves its built-in QEMU user, libvirt-qemu, before
//     it reads qemu.conf and fails without it; that user is created by
//     libvirt-daemon-system, which the benchmark does not need (it pulls iptables, a
//     default NAT network and init scripts). When the user is missing, the namespace
//     gets a copy of /etc/passwd and /etc/group that adds it; the host's files stay
//     as they are;
//   - virsh reaches it at qemu:///system?socket=DIR/run/libvirt-sock.
//
// It needs root (hv does too) and the packages in scripts/deps-bench.txt.
type Daemon struct {
	dir     string // etc, run, lib, log, cache, libvirtd.log
	uri     string
	Version string // virsh version: library and hypervisor lines
	cmd     *exec.Cmd
	done    chan struct{}
	log     string
	made    []string // mount points created on the host; removed again at stop
}

// libvirtDirs are the directories libvirtd's QEMU driver uses, and where the
// benchmark's copies of them live under l.dir.
var libvirtDirs = []struct{ sub, host string }{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	{"cache", "/var/cache/libvirt"},
}

const libvirtQEMUConf = `# hv bench: private libvirtd (bench/internal/libvirt)
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
`

const libvirtdConf = `# hv bench: private libvirtd (bench/internal/libvirt)
log_outputs = "3:stderr"
`

// libvirtdScript runs inside the new mount namespace: bind mounts, then exec libvirtd
// (so the process bench started is libvirtd itself).
const libvirtdScript = `set -e
d=$1
mount --bind "$d/etc" /etc/libvirt
mount --bind "$d/run" /run/libvirt
mount --bind "$d/lib" /var/lib/libvirt
mount --bind "$d/log" /var/log/libvirt
mount --bind "$d/cache" /var/cache/libvirt
if [ -f "$d/passwd" ]; then mount --bind "$d/passwd" /etc/passwd; fi
if [ -f "$d/group" ]; then mount --bind "$d/group" /etc/group; fi
shift
while [ $# -ge 2 ]; do mount --bind "$1" "$2"; shift 2; done
exec libvirtd --pid-file "$d/libvirtd.pid"
`

// Options are what a daemon of the migration benchmark changes in Start's
// configuration; the zero value is Start's.
type Options struct {
	// HostUUID is libvirtd.conf's host_uuid: two daemons of one machine need
	// different ones, as libvirt refuses to migrate to a host with its own UUID.
	HostUUID string
	// QEMUConf is appended to qemu.conf (TLS directories, migration ports).
	QEMUConf string
	// Binds are bind mounts done in the daemon's namespace only, {host dir,
	// mount point}: the same path names a different directory in each daemon
	// (and in the QEMUs it starts). The mount points must exist.
	Binds [][2]string
}

// Start starts the private libvirtd with its state under dir and waits until
// virsh reaches it. Its stop (destroy every domain, stop libvirtd, kill any process
// whose command line names dir) is registered with cl: keep the domains' files (disks)
// under dir too. An error says why libvirt is not available here.
func Start(ctx context.Context, cl *harness.Cleanup, dir string) (*Daemon, error) {
	return StartWith(ctx, cl, dir, Options{})
}

// StartWith is Start with o's changes.
func StartWith(ctx context.Context, cl *harness.Cleanup, dir string, o Options) (*Daemon, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the private libvirtd needs root (a mount namespace of its own)")
	}
	for _, bin := range []string{"libvirtd", "virsh", "unshare", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found; install scripts/deps-bench.txt (scripts/install-deps.sh bench)", bin)
		}
	}
	l := &Daemon{dir: dir, log: filepath.Join(dir, "libvirtd.log"), done: make(chan struct{}),
		uri: "qemu:///system?socket=" + filepath.Join(dir, "run", "libvirt-sock")}
	for _, d := range libvirtDirs {
		if err := os.MkdirAll(filepath.Join(dir, d.sub), 0o755); err != nil {
			return nil, err
		}
		if _, err := os.Stat(d.host); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(d.host, 0o755); err != nil {
				return nil, fmt.Errorf("mount point %s: %w", d.host, err)
			}
			l.made = append(l.made, d.host)
		}
	}
	cl.Add(l.removeMountPoints)
	if err := writeConfig(dir, o); err != nil {
		return nil, err
	}
	logFile, err := os.Create(l.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := []string{"--mount", "--propagation", "private", "sh", "-c", libvirtdScript, "sh", dir}
	for _, b := range o.Binds {
		args = append(args, b[0], b[1])
	}
	l.cmd = exec.Command("unshare", args...)
	l.cmd.Stdout, l.cmd.Stderr = logFile, logFile
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting libvirtd: %w", err)
	}
	go func() { l.cmd.Wait(); close(l.done) }()
	cl.Add(l.stop)
	harness.Logf("libvirtd pid %d, state in %s", l.cmd.Process.Pid, dir)
	if err := l.waitReady(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// waitReady waits until virsh reaches the daemon, and notes its version.
func (l *Daemon) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := l.Virsh(ctx, 10*time.Second, "version")
		if err == nil {
			var lines []string
			for _, line := range strings.Split(out, "\n") {
				if line = strings.Join(strings.Fields(line), " "); line != "" {
					lines = append(lines, line)
				}
			}
			l.Version = strings.Join(lines, "; ")
			return nil
		}
		select {
		case <-l.done:
			return fmt.Errorf("libvirtd exited at start: %s", harness.Tail(l.log))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("libvirtd did not answer within 60s: %v; %s", err, harness.Tail(l.log))
		}
	}
}

// writeConfig writes qemu.conf and libvirtd.conf with o's changes, and the
// user libvirt-qemu where the host lacks it.
func writeConfig(dir string, o Options) error {
	qemuConf, daemonConf := libvirtQEMUConf+o.QEMUConf, libvirtdConf
	if o.HostUUID != "" {
		daemonConf += fmt.Sprintf("host_uuid = %q\n", o.HostUUID)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "qemu.conf"), []byte(qemuConf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "libvirtd.conf"), []byte(daemonConf), 0o644); err != nil {
		return err
	}
	return addQEMUUser(dir)
}

// URI is how virsh reaches the daemon.
func (l *Daemon) URI() string { return l.uri }

// PeerURI is how another libvirtd reaches this one (peer-to-peer migration):
// qemu+unix forces libvirt's remote driver, where qemu:// inside a daemon
// would name that daemon's own QEMU driver.
func (l *Daemon) PeerURI() string {
	return "qemu+unix:///system?socket=" + filepath.Join(l.dir, "run", "libvirt-sock")
}

// addQEMUUser writes dir/passwd and dir/group, copies of the host's with libvirt-qemu
// added, when the host has no such user or group (see libvirtd).
func addQEMUUser(dir string) error {
	const name = "libvirt-qemu"
	if _, err := user.Lookup(name); err != nil {
		b, err := os.ReadFile("/etc/passwd")
		if err != nil {
			return err
		}
		b = append(b, []byte(name+":x:64055:64055:hv bench:/nonexistent:/usr/sbin/nologin\n")...)
		if err := os.WriteFile(filepath.Join(dir, "passwd"), b, 0o644); err != nil {
			return err
		}
	}
	if _, err := user.LookupGroup(name); err != nil {
		b, err := os.ReadFile("/etc/group")
		if err != nil {
			return err
		}
		b = append(b, []byte(name+":x:64055:\n")...)
		if err := os.WriteFile(filepath.Join(dir, "group"), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Virsh runs virsh against the private libvirtd; its output, or an error with it.
func (l *Daemon) Virsh(ctx context.Context, limit time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "virsh", append([]string{"-q", "-c", l.uri}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// stop destroys the domains, stops libvirtd, and kills any process left whose
// command line names l.dir (QEMU outlives libvirtd).
func (l *Daemon) stop() {
	select {
	case <-l.done:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if out, err := l.Virsh(ctx, 10*time.Second, "list", "--name"); err == nil {
			for _, dom := range strings.Fields(out) {
				_, _ = l.Virsh(ctx, 10*time.Second, "destroy", dom)
			}
		}
		cancel()
		_ = l.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			_ = l.cmd.Process.Kill()
			<-l.done
		}
	}
	for _, pid := range harness.PidsMentioning(l.dir) {
		harness.Logf("killing leftover process %d (its command line names %s)", pid, l.dir)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// removeMountPoints removes the empty directories startLibvirtd made on the host.
func (l *Daemon) removeMountPoints() {
	for i := len(l.made) - 1; i >= 0; i-- {
		_ = os.Remove(l.made[i]) // only when empty
	}
	l.made = nil
}

// Domain is a transient domain: the same VM as the plain package's generation 2 command
// line (q35, OVMF with its own VARS copy, -cpu max, virtio-blk, the agent channel).
type Domain struct {
	Name, Disk, Vars, Serial string
	MemMiB, CPUs             int
	Accel                    string
}

func (d Domain) XML() string {
	typ, cpu := "qemu", "<cpu mode='maximum'/>"
	if d.Accel == "kvm" {
		typ, cpu = "kvm", "<cpu mode='host-passthrough'/>"
	}
	esc := html.EscapeString
	return fmt.Sprintf(`<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>%d</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <loader readonly='yes' type='pflash'>%s</loader>
    <nvram>%s</nvram>
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
    <controller type='usb' model='none'/>
    <controller type='virtio-serial'/>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`, typ, esc(d.Name), d.MemMiB, d.CPUs, esc(guest.OVMFCode), esc(d.Vars), cpu, esc(d.Disk), esc(d.Serial))
}

// agent sends one command to the domain's guest agent through libvirt
// (virsh qemu-agent-command) and decodes "return" into result when not nil.
func (l *Daemon) agent(ctx context.Context, dom string, limit time.Duration, command string, args, result any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	secs := max(int(limit/time.Second), 1)
	out, err := l.Virsh(ctx, limit+10*time.Second, "qemu-agent-command", dom, string(b), "--timeout", fmt.Sprint(secs))
	if err != nil {
		return err
	}
	var ans struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ans); err != nil {
		return fmt.Errorf("%s: undecodable answer %.100q: %w", command, out, err)
	}
	if result != nil {
		return json.Unmarshal(ans.Return, result)
	}
	return nil
}

// AgentRun is guest-exec through libvirt, then guest-exec-status every 500 ms until
// the process exited; a non-zero exit is an error with its output.
func (l *Daemon) AgentRun(ctx context.Context, dom string, limit time.Duration, path string, args ...string) error {
	var started struct {
		PID int `json:"pid"`
	}
	if err := l.agent(ctx, dom, 30*time.Second, "guest-exec",
		map[string]any{"path": path, "arg": args, "capture-output": true}, &started); err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		var st rawagent.ExecStatus
		if err := l.agent(ctx, dom, 30*time.Second, "guest-exec-status", map[string]int{"pid": started.PID}, &st); err != nil {
			return err
		}
		if st.Exited {
			if st.ExitCode != 0 || st.Signal != 0 {
				out, _ := base64.StdEncoding.DecodeString(st.OutData)
				errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
				return fmt.Errorf("%s in the guest: exit code %d, signal %d: %s%s", path, st.ExitCode, st.Signal, out, errOut)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) still running after %s", path, started.PID, limit)
		}
		harness.Sleep(ctx, 500*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// WaitAgent pings the domain's agent through libvirt until it answers.
func (l *Daemon) WaitAgent(ctx context.Context, dom string, limit time.Duration) (time.Duration, error) {
	t0 := time.Now()
	var err error
	for time.Since(t0) < limit {
		if err = l.agent(ctx, dom, 2*time.Second, "guest-ping", nil, nil); err == nil {
			return time.Since(t0), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		harness.Sleep(ctx, 500*time.Millisecond)
	}
	return 0, fmt.Errorf("agent of %s did not answer within %s: %v", dom, limit, err)
}

// Jobs follows `virsh event --event job-completed --loop` for one domain.
type Jobs struct {
	cmd  *exec.Cmd
	Done chan string // one line per job-completed event (with its details)
}

func (l *Daemon) WatchJobs(ctx context.Context, cl *harness.Cleanup, dom string) (*Jobs, error) {
	j := &Jobs{Done: make(chan string, 16)}
	j.cmd = exec.CommandContext(ctx, "virsh", "-q", "-c", l.uri, "event", "--domain", dom, "--event", "job-completed", "--loop")
	out, err := j.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := j.cmd.Start(); err != nil {
		return nil, err
	}
	cl.Add(func() { _ = j.cmd.Process.Kill(); _ = j.cmd.Wait() })
	go func() {
		// An event is one line naming it, then its details on indented lines; the
		// job's outcome is read with domjobinfo --completed afterwards.
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); strings.Contains(line, "job-completed") {
				j.Done <- line
			}
		}
		close(j.Done)
	}()
	return j, nil
}

// JobStats are the statistics of a completed job as `virsh event` prints
// them: "memory_processed", "downtime", ... (numbers as text).
type JobStats map[string]string

// NextJobCompleted starts waiting for dom's next job-completed event (its
// statistics: for a migration, the source's view of it) and returns a function
// that waits for it, up to limit from now. Call it before the job starts.
func (l *Daemon) NextJobCompleted(ctx context.Context, dom string, limit time.Duration) (func() (JobStats, error), error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	cmd := exec.CommandContext(ctx, "virsh", "-q", "-c", l.uri, "event", "--domain", dom, "--event", "job-completed")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("virsh event: %w", err)
	}
	return func() (JobStats, error) {
		defer cancel()
		if err := cmd.Wait(); err != nil {
			return nil, fmt.Errorf("virsh event --event job-completed %s: %w: %s", dom, err, strings.TrimSpace(out.String()))
		}
		return parseJobStats(out.String())
	}, nil
}

// parseJobStats reads "key: value" lines after the event's line.
func parseJobStats(text string) (JobStats, error) {
	st := JobStats{}
	seen := false
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "job-completed") {
			seen = true
			continue
		}
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && seen {
			st[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if !seen {
		return nil, fmt.Errorf("no job-completed event in virsh's output: %.200q", text)
	}
	return st, nil
}
