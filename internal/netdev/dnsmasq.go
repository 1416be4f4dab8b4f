package netdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// dnsmasq runs one DHCP server per internal switch. It runs as a daemon with
// a pid file, so it outlives an hvd restart and Restore adopts it.
type dnsmasq struct{ dir string }

func (d dnsmasq) pidFile(sw string) string   { return filepath.Join(d.dir, sw+".pid") }
func (d dnsmasq) leaseFile(sw string) string { return filepath.Join(d.dir, sw+".leases") }

func dnsmasqBinary() (string, error) {
	if _, err := os.Stat("/usr/sbin/dnsmasq"); err == nil {
		return "/usr/sbin/dnsmasq", nil
	}
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: dhcp: dnsmasq is not installed; install it (apt-get install dnsmasq-base) or create the switch without DHCP", errdefs.ErrUnavailable)
}

// args serves DHCP on the bridge alone: no DNS (--port=0), no config file,
// bound to that interface so several instances live side by side.
func (d dnsmasq) args(sw, bridge string, subnet netip.Prefix) ([]string, error) {
	start, end, err := dhcpRange(subnet)
	if err != nil {
		return nil, err
	}
	return []string{
		"--conf-file=/dev/null",
		"--port=0",
		"--interface=" + bridge,
		"--bind-interfaces",
		"--except-interface=lo",
		"--dhcp-authoritative",
		fmt.Sprintf("--dhcp-range=%s,%s,%s,12h", start, end, netmask(subnet)),
		"--dhcp-leasefile=" + d.leaseFile(sw),
		"--pid-file=" + d.pidFile(sw),
	}, nil
}

// running is the pid of this switch's dnsmasq, or 0. A pid counts only when
// its command line names our pid file, so a recycled pid is never killed.
func (d dnsmasq) running(sw string) int {
	b, err := os.ReadFile(d.pidFile(sw))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("--pid-file="+d.pidFile(sw)+"\x00")) {
		return 0
	}
	return pid
}

// ensure starts dnsmasq unless it runs already. dnsmasq reports a bad
// option or a busy port before it forks, so its exit status is the answer.
func (d dnsmasq) ensure(ctx context.Context, sw, bridge string, subnet netip.Prefix) error {
	if d.running(sw) != 0 {
		return nil
	}
	bin, err := dnsmasqBinary()
	if err != nil {
		return err
	}
	args, err := d.args(sw, bridge, subnet)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // the daemon must not hold our pipes open
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: dhcp: dnsmasq for switch %s did not start: %v: %s",
			errdefs.ErrUnavailable, sw, err, strings.TrimSpace(out.String()))
	}
	if d.running(sw) == 0 {
		return fmt.Errorf("%w: dhcp: dnsmasq for switch %s exited right after starting; check the system log", errdefs.ErrUnavailable, sw)
	}
	return nil
}

// stop ends the switch's dnsmasq (SIGTERM, then SIGKILL) and removes its
// pid file; the lease file goes only with the switch (purge).
func (d dnsmasq) stop(sw string, purge bool) error {
	if pid := d.running(sw); pid != 0 {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			_ = syscall.Kill(pid, sig)
			for i := 0; i < 150 && d.running(sw) != 0; i++ {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if d.running(sw) != 0 {
			return fmt.Errorf("%w: dnsmasq (pid %d) for switch %s does not stop; kill it by hand", errdefs.ErrUnavailable, pid, sw)
		}
	}
	files := []string{d.pidFile(sw)}
	if purge {
		files = append(files, d.leaseFile(sw))
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
