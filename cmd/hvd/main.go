// Command hvd is hv's host daemon (Hyper-V's VMMS): it serves the REST API on a
// unix socket and supervises one QEMU process per running VM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/host"
	"github.com/hvproject/hv/internal/httpapi"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/trust"
	"github.com/hvproject/hv/internal/validate"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hvd:", err)
		os.Exit(1)
	}
}

type options struct {
	root, socket, logLevel, logFormat string
	accel, vmLogMax                   string
	heartbeat                         time.Duration
	listen, storage                   []string
	config                            string
}

func newCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "hvd",
		Short: "hv's host daemon: the REST API and the supervisor of every VM on this host",
		Long: `hvd manages the virtual machines of this host. It serves hv's REST API (version 1.0,
documented at GET /1.0/openapi.yaml) on a unix socket that only root can use, keeps
each VM's configuration and state under --root, and runs one QEMU process per
running VM.

VMs run on KVM when hvd's probe shows that it runs guest code: at start, hvd
boots a few bytes of code (no firmware) that go from real mode to 64-bit long
mode with paging, as a kernel does, under KVM with the host's CPU model and a
baseline one, and uses the first that reports back. A /dev/kvm that opens but
cannot run guests (a paravirtual or half-enabled KVM, a CPU feature KVM
refuses) is not enough. Otherwise VMs run on TCG emulation, and 'hv host info'
says why in plain words. --accel kvm refuses to start where KVM does not work;
--accel tcg skips the probe.

QEMU processes outlive hvd: stop or restart hvd at any time (even kill -9) and the
VMs keep running; the next hvd finds them again. Every change is on disk before the
API answers.

Each VM lives whole (configuration, disks, UEFI variables, checkpoints, saved
memory) in one directory of a storage location: ROOT/vms/NAME by default.
--storage NAME=DIR adds a location (a faster disk, a share every host mounts
at the same path); 'hv vm create --storage NAME' and 'hv vm move-storage'
use it. hvd trusts what it finds there: DIR must belong to hvd's user and be
writable by it alone (hvd makes it, mode 0700, if missing).

With --listen ADDR:PORT, hvd also serves the same API over the network, on
TLS 1.3 with client certificates only (there is no plain TCP listener). It
makes its own key and certificate on first start (ROOT/tls/server.key, 0600,
and server.crt); 'hv host info' shows the certificate's fingerprint. Clients
join with a one-time token: 'hv trust add NAME' here, 'hv remote add' there.
Every network request is logged with the client certificate's name.

hvd runs in the foreground and logs to stderr; run it under systemd or a shell job.

` + configHelp,
		Example: `  # as root, with the defaults
  hvd

  # a private instance for tests
  hvd --root /tmp/hv --socket /tmp/hv/hvd.sock
  HV_SOCKET=/tmp/hv/hvd.sock hv host info

  # also serve the API to trusted clients on the network
  hvd --listen 192.0.2.10:8443

  # keep some VMs on a faster disk
  hvd --storage fast=/srv/nvme/hv

  # settings from a file (flags given here override it)
  hvd --config /etc/hv/hvd.conf`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.config != "" {
				if err := applyConfig(cmd.Flags(), o.config); err != nil {
					return err
				}
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.AddCommand(newThawGuardCommand())
	f := cmd.Flags()
	f.StringVar(&o.root, "root", "/var/lib/hv", "directory holding VMs and state")
	f.StringVar(&o.socket, "socket", "/run/hv/hvd.sock", "unix socket to serve the API on")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.StringVar(&o.accel, "accel", "auto", "accelerator: auto (KVM when the probe runs guest code, else TCG), kvm (refuse to start without it) or tcg")
	f.StringVar(&o.vmLogMax, "vm-log-max", "8M", "keep at most this much of each VM's console.log and qemu.log (the oldest half goes beyond it)")
	f.DurationVar(&o.heartbeat, "heartbeat-interval", time.Second, "how often each running VM's guest agent is pinged")
	f.StringSliceVar(&o.listen, "listen", nil, "also serve the API on ADDR:PORT over TLS with client certificates (repeatable, or comma-separated)")
	f.StringArrayVar(&o.storage, "storage", nil, "also keep VMs in storage location NAME=DIR (repeatable); ROOT/vms is the location named default")
	f.StringVar(&o.config, "config", "", "read settings from FILE (name = value lines; flags override it)")
	return cmd
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q; use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q; use text or json", format)
}

func run(ctx context.Context, o options) error {
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.heartbeat < 10*time.Millisecond {
		return fmt.Errorf("--heartbeat-interval: %s is too short; use 10ms or more (default 1s)", o.heartbeat)
	}
	logMax, err := validate.ParseSize("--vm-log-max", o.vmLogMax)
	if err != nil {
		return err
	}
	if logMax < 64<<10 {
		return fmt.Errorf("--vm-log-max: %s is too small to hold a boot's messages; use 64K or more (default 8M)", o.vmLogMax)
	}
	o.listen = splitList(strings.Join(o.listen, ","))
	if err := checkListen(o.listen); err != nil {
		return err
	}
	var storage []locations.Location
	for _, s := range o.storage {
		l, err := locations.Parse(s)
		if err != nil {
			return err
		}
		storage = append(storage, l)
	}
	lock, err := openRoot(o.root, log)
	if err != nil {
		return err
	}
	defer lock.Close()
	remote, err := openRemote(o.root, o.listen, log)
	if err != nil {
		return err
	}
	defer remote.close()

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	bus := events.NewBus(log)
	ops := operation.NewManager(bus, httpapi.StatusCode)
	svc, err := host.New(ctx, host.Options{Root: o.root, Log: log, Bus: bus, Ops: ops, HeartbeatInterval: o.heartbeat,
		Hooks: crashHooks(log), Accel: o.accel, VMLogMax: int64(logMax), Storage: storage,
		Peers: migrationPeers{remote.peers}, ListenHost: migrationListenHost(o.listen)})
	if err != nil {
		return err
	}
	defer svc.Close()
	return serve(ctx, o, log, svc, ops, bus, remote)
}

// serve serves the API on the unix socket and on every --listen address
// until ctx ends.
func serve(ctx context.Context, o options, log *slog.Logger, svc *host.Service, ops *operation.Manager, bus *events.Bus, remote *remoteParts) error {
	ln, err := listen(o.socket)
	if err != nil {
		return err
	}
	trustSvc := trust.NewService(remote.store, remote.id.Fingerprint, remote.hostname, remote.listen, log)
	// The API's timeouts cut off slow and stalled clients but not streams (see httpapi.Timeouts).
	// The host service plays the VMs' roles; its features play theirs.
	roles := httpapi.Roles{Host: tlsHost{svc, remote.id.Fingerprint, remote.listen}, VMs: svc, Guest: svc.Guest(),
		Devices: svc.Devices(), Disks: svc.Images(), Switches: svc.Devices(), Checkpoints: svc.Checkpoints(),
		Transfers: svc.Transfers(), Backups: svc.Backups(), Moves: svc.Moves(), Storage: svc.StorageMoves(), Migrations: svc.Migrations(),
		Trust: trustSvc, Peers: remote.peers}
	handler := httpapi.New(roles, ops, bus, log)
	srv := handler.HTTPServer()
	info := svc.Info()
	log.Info("hvd serving", "socket", o.socket, "listen", remote.listen, "tls_fingerprint", remote.id.Fingerprint,
		"root", info.Root, "version", info.Version, "accelerator", info.Accelerator, "cpu", info.AcceleratorCPU,
		"qemu", info.QEMUVersion, "vms", info.VMs, "running", info.VMsRunning)
	errc := make(chan error, 1+len(remote.listeners))
	go func() { errc <- srv.Serve(ln) }()
	servers := append(remote.serveRemote(handler, trustSvc, log, errc), srv)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("hvd stopping; running VMs keep running")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	_ = os.Remove(o.socket)
	return nil
}

// openRoot prepares --root and takes its lock: one hvd per root, since two
// would fight over the same VMs.
func openRoot(root string, log *slog.Logger) (*os.File, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("--root: %w", err)
	}
	if err := checkRoot(root, log); err != nil {
		return nil, err
	}
	// O_NOFOLLOW: a link planted here would make root create or lock the file it names.
	path := filepath.Join(root, "hvd.lock")
	lock, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("--root: %s is a symbolic link, which hvd does not follow; remove it (hvd creates the lock file itself): rm %s", path, shellQuote(path))
	}
	if err != nil {
		return nil, fmt.Errorf("--root: %w", err)
	}
	if fi, err := lock.Stat(); err != nil || !fi.Mode().IsRegular() {
		lock.Close()
		return nil, fmt.Errorf("--root: %s is not a regular file; remove it (hvd creates the lock file itself)", path)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another hvd is already running with --root %s; stop it first", root)
	}
	return lock, nil
}

// checkRoot refuses a root that another user could change: hvd runs as root
// and trusts what it finds there (configurations name images, kernels and
// firmware; runtime files name the PIDs it signals). The root itself is
// checked, after any symbolic link to it: an admin may keep it elsewhere.
func checkRoot(root string, log *slog.Logger) error {
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("--root: %s is not a directory; give a directory (hvd creates it if missing)", root)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("--root: cannot tell who owns %s", root)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	owner := fmt.Sprintf("%d:%d", uid, gid)
	if uid == 0 {
		owner = "root:root"
	}
	var wrong []string
	if int(st.Uid) != uid {
		wrong = append(wrong, fmt.Sprintf("it is owned by uid %d, not by uid %d that hvd runs as", st.Uid, uid))
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		wrong = append(wrong, fmt.Sprintf("its mode %04o lets group or others write to it", perm))
	}
	if len(wrong) > 0 {
		q := shellQuote(root)
		return fmt.Errorf("--root: %s is unsafe: %s; another user could change the VMs and state hvd trusts. Fix it with: chown %s %s && chmod 700 %s",
			root, strings.Join(wrong, ", and "), owner, q, q)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("--root is readable by other users; VM configurations and disks may be too", "root", root,
			"mode", fmt.Sprintf("%04o", perm), "fix", "chmod 700 "+shellQuote(root))
	}
	return nil
}

// shellQuote quotes s for a command the user may paste, when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// maxSocketPath is the longest path a unix socket can be bound at or dialed
// (sun_path is 108 bytes with its NUL).
const maxSocketPath = 107

// listen opens the API socket, readable and writable by its owner (root) only.
//
// The socket is bound in a fresh directory of mode 0700 next to its final
// path, chmodded to 0600 there, and renamed into place. Binding at the final
// path would create it with the mode the umask leaves: setting the umask for
// the bind changes it for every goroutine creating files at that moment (the
// umask belongs to the process), and a chmod after the bind leaves a moment
// in which anyone may connect. In the private directory nobody else can reach
// the socket before it has its final mode, and the rename is atomic (it also
// replaces a stale socket left by a killed hvd).
func listen(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("--socket: %s is %d bytes long, more than a unix socket path may be (%d); choose a shorter path", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("--socket: %s is served by another process (another hvd?); stop it or choose another path", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("--socket: %s exists and is not a socket; remove it or choose another path", path)
	}
	private, err := os.MkdirTemp(dir, ".hvd")
	if err != nil {
		return nil, fmt.Errorf("--socket: %w", err)
	}
	defer os.Remove(private) // empty once the socket has moved out
	tmp := filepath.Join(private, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("--socket: hvd binds the socket in %s first, a path too long for a unix socket; choose a --socket in a shorter directory", private)
	}
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("--socket: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("--socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("--socket: %w", err)
	}
	return ln, nil
}

// crashHooks lets the crash tests kill hvd at a chosen point: HV_TEST_CRASH_AT names
// the point (e.g. "start:launched"). Unset in production, it costs nothing.
func crashHooks(log *slog.Logger) host.Hooks {
	point := os.Getenv("HV_TEST_CRASH_AT")
	if point == "" {
		return nil
	}
	log.Warn("test crash hook armed", "point", point)
	return func(p string) {
		if p == point {
			log.Warn("test crash hook: exiting now", "point", p)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

// newThawGuardCommand is the process hvd leaves behind during a guest freeze: it
// thaws the guest at the deadline if hvd could not (crashed, killed, hung).
func newThawGuardCommand() *cobra.Command {
	var agent, at string
	cmd := &cobra.Command{
		Use:    "thaw-guard --agent SOCKET --at TIME",
		Short:  "thaw a frozen guest at a deadline (started by hvd during freezes)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := time.Parse(time.RFC3339Nano, at)
			if err != nil {
				return fmt.Errorf("--at: %q is not an RFC 3339 time", at)
			}
			return guest.RunThawGuard(cmd.Context(), agent, t)
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "the guest agent's socket")
	cmd.Flags().StringVar(&at, "at", "", "when to thaw (RFC 3339)")
	return cmd
}
