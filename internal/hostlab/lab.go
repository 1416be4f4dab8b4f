// Package hostlab starts several hv hosts on one machine for tests and
// benchmarks: each hvd in its own network namespace with its own root,
// wired to the others by a bridge, reached over TLS at its own address. A
// lab can cut a host's link, slow it (tc tbf, tc netem) and kill a host
// outright, to test what hv does when hosts fail.
//
// It needs root (namespaces, links, mounts). Every name it makes starts
// with "hl" and the lab's six-hex-digit id, so that Sweep can remove what a
// crashed run left.
package hostlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// DefaultPort is where each host's hvd serves the API over TLS.
const DefaultPort = 8443

// HostSpec is how one host of the lab differs from the others.
type HostSpec struct {
	// RootSize, when set, puts the host's root on a tmpfs of this many
	// bytes (mounted before hvd starts): a host whose disk fills.
	RootSize int64
	// Flags are extra hvd flags (e.g. --accel tcg).
	Flags []string
}

// Config describes a lab.
type Config struct {
	Hosts []HostSpec // one per host; Hosts(n) makes n plain ones
	Bin   string     // directory holding hv and hvd
	Dir   string     // where the lab's directory goes (default /tmp; keep it short: sockets are at most 108 bytes)
	Port  int        // DefaultPort when 0
	Env   []string   // extra environment for hvd and hv
	Log   *slog.Logger
}

// Hosts returns n plain host specs.
func Hosts(n int) []HostSpec { return make([]HostSpec, n) }

// Lab is a set of hosts on one bridge.
type Lab struct {
	ID     string
	Dir    string       // holds each host's root (h0, h1...) and hvd's log (h0.log...)
	NetNS  string       // the namespace holding the bridge
	Subnet netip.Prefix // the hosts' addresses

	cfg   Config
	log   *slog.Logger
	hosts []*Host

	mu     sync.Mutex
	closed bool
	keep   bool
}

// New builds a lab and starts every host's hvd; on error, what it built is
// removed. Call Close when done (also after a failure).
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if len(cfg.Hosts) == 0 {
		return nil, errors.New("hostlab: Config.Hosts is empty; give at least one host (hostlab.Hosts(n))")
	}
	for _, b := range []string{"hv", "hvd"} {
		if _, err := os.Stat(filepath.Join(cfg.Bin, b)); err != nil {
			return nil, fmt.Errorf("hostlab: Config.Bin: %w; build hv and hvd (make build)", err)
		}
	}
	if cfg.Dir == "" {
		cfg.Dir = "/tmp"
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	id := newID()
	sn, err := subnet(id, localPrefixes())
	if err != nil {
		return nil, err
	}
	l := &Lab{ID: id, Dir: filepath.Join(cfg.Dir, "hl"+id), NetNS: "hl" + id, Subnet: sn, cfg: cfg,
		log: cfg.Log.With("lab", id)}
	if err := l.build(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			l.log.Warn("removing a lab that failed to build", "err", cerr)
		}
		return nil, fmt.Errorf("hostlab: building lab %s: %w", id, err)
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	if err := os.Mkdir(l.Dir, 0o700); err != nil {
		return err
	}
	// The owner's pid tells Sweep whether the lab is still in use.
	if err := os.WriteFile(filepath.Join(l.Dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	if err := l.buildBridge(ctx); err != nil {
		return err
	}
	for i, spec := range l.cfg.Hosts {
		h, err := l.newHost(i, spec)
		if err != nil {
			return err
		}
		l.hosts = append(l.hosts, h)
		if err := h.build(ctx); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	for _, h := range l.hosts {
		if err := h.StartHVD(ctx); err != nil {
			return err
		}
	}
	l.log.Info("lab up", "dir", l.Dir, "subnet", l.Subnet, "hosts", len(l.hosts))
	return nil
}

// Host returns host i (0-based); it panics on an index out of range, as a
// slice does.
func (l *Lab) Host(i int) *Host { return l.hosts[i] }

// Len is the number of hosts.
func (l *Lab) Len() int { return len(l.hosts) }

// KeepFiles makes Close leave the lab's directory (the hosts' roots unless
// on tmpfs, and hvd's logs) for inspection; the processes and links go.
func (l *Lab) KeepFiles() {
	l.mu.Lock()
	l.keep = true
	l.mu.Unlock()
}

// Close kills every process of the lab and removes its namespaces, links,
// mounts and (unless KeepFiles) its directory. It is safe after a partial
// New and a second time; it returns the first thing it could not remove.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	keep := l.keep
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*cmdTimeout)
	defer cancel()
	var errs []error
	for _, h := range l.hosts {
		errs = append(errs, h.KillHost(ctx))
	}
	errs = append(errs, teardown(ctx, l.ID, l.Dir, keep))
	err := errors.Join(errs...)
	if err != nil {
		l.log.Warn("lab closed with errors", "err", err)
	} else {
		l.log.Info("lab closed")
	}
	return err
}

// localPrefixes lists the prefixes of this namespace's addresses.
func localPrefixes() []netip.Prefix {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	return out
}
