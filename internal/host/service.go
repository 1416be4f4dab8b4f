// Package host is hv's management service (Hyper-V's VMMS): it owns the VMs on
// this host, enforces their state machine, persists every change before it
// answers and supervises one QEMU process per running VM.
package host

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/feature/backup"
	"github.com/hvproject/hv/internal/feature/checkpoints"
	"github.com/hvproject/hv/internal/feature/devices"
	"github.com/hvproject/hv/internal/feature/images"
	"github.com/hvproject/hv/internal/feature/integration"
	"github.com/hvproject/hv/internal/feature/migration"
	"github.com/hvproject/hv/internal/feature/resiliency"
	"github.com/hvproject/hv/internal/feature/storage"
	"github.com/hvproject/hv/internal/feature/transfer"
	"github.com/hvproject/hv/internal/hostenv"
	"github.com/hvproject/hv/internal/locations"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/store"
	"github.com/hvproject/hv/internal/vmconfig"
	"github.com/hvproject/hv/internal/vmplan"
)

// Version is hv's release version, reported by the API.
const Version = "0.1.0"

// Options configure a Service. Zero values take the documented defaults.
type Options struct {
	Root string // state directory; VMs live in Root/vms/NAME (the default storage location)
	// Storage are storage locations besides Root/vms (hvd --storage NAME=DIR).
	Storage []locations.Location
	Log     *slog.Logger
	Bus     *events.Bus
	Ops     *operation.Manager
	// QEMUBinary overrides the qemu-system-x86_64 found in PATH.
	QEMUBinary string
	// HeartbeatInterval is how often the guest agent is pinged (default 1s).
	HeartbeatInterval time.Duration
	// Hooks lets tests stop hvd at chosen points of an operation (crash tests).
	Hooks Hooks
	// GuardBinary is the hvd executable, run as "thaw-guard" during freezes
	// (default: this process's own executable).
	GuardBinary string
	// Accel is auto (default: KVM when the probe shows it runs guest code,
	// else TCG), kvm (refused when the probe fails) or tcg.
	Accel string
	// Prober stands in for /dev/kvm and QEMU in tests of the decision.
	Prober qemu.Prober
	// Store keeps the VMs' records (default: files in each VM's directory).
	Store store.Store
	// Peers reaches the other hosts this one trusts (moving VMs away); nil:
	// none.
	Peers migration.Peers
	// ListenHost is the address hvd serves the API on over the network,
	// where QEMU listens for VMs arriving from other hosts; "": none.
	ListenHost string
	// VMLogMax caps each VM's console.log and qemu.log (default 8 MiB):
	// beyond it the oldest half goes, so a guest that prints forever cannot
	// fill the disk holding every VM's state.
	VMLogMax int64
	// CriticalRetry is how often a PausedCritical VM tries its storage
	// again (default resiliency.DefaultRetry; tests shorten it).
	CriticalRetry time.Duration
}

// DefaultVMLogMax is Options.VMLogMax's default.
const DefaultVMLogMax = 8 << 20

// Hooks are called at named points of long operations; nil means none.
type Hooks func(point string)

// Service is the host's management service.
type Service struct {
	root     string
	locs     *locations.Set // where VMs live: Root/vms and --storage
	runDir   string
	log      *slog.Logger
	bus      *events.Bus
	ops      *operation.Manager
	disk     *disk.Tool
	env      *hostenv.Env // QEMU, firmware, the accelerator VMs start on
	hbEvery  time.Duration
	logMax   int64
	hooks    Hooks
	guardBin string
	net      *netdev.Manager
	store    store.Store
	tracker  blockops.Tracker
	backups  *backup.Service
	ckpts    *checkpoints.Service
	moves    *migration.Source
	incoming *migration.Target
	// The features built on the host (see features.go).
	transfers *transfer.Service
	guestAPI  *integration.Service
	devices   *devices.Service
	devs      vmDevices // devices, as a VM's life calls them
	images    *images.Service
	storage   *storage.Service
	// resilience watches running VMs' storage (PausedCritical).
	resilience *resiliency.Service

	mu  sync.Mutex
	vms map[string]*vm // by name; a name being created maps to a placeholder

	stop chan struct{} // closed by Close: ends the background loops
}

// New checks the host (QEMU, qemu-img, firmware, accelerator), prepares Root and
// finds every VM again, re-attaching to those whose QEMU still runs.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Root == "" {
		return nil, fmt.Errorf("root: empty; pass --root DIR: %w", errdefs.ErrInvalid)
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	s := &Service{
		root: root, runDir: filepath.Join(root, "run"),
		log: o.Log, bus: o.Bus, ops: o.Ops, hbEvery: o.HeartbeatInterval, hooks: o.Hooks, guardBin: o.GuardBinary,
		vms: map[string]*vm{}, stop: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.guardBin == "" {
		s.guardBin, _ = os.Executable()
	}
	if s.hbEvery == 0 {
		s.hbEvery = time.Second
	}
	if s.store = o.Store; s.store == nil {
		s.store = store.Files{}
	}
	if s.logMax = o.VMLogMax; s.logMax <= 0 {
		s.logMax = DefaultVMLogMax
	}
	// Sockets live under Root/run: a unix socket path must fit in 108 bytes.
	if n := len(s.runDir) + len("/01234567-0123-0123-0123-0123456789ab/console.sock"); n > 107 {
		return nil, fmt.Errorf("root: %q is too long (%d bytes) for the VMs' unix sockets; use a shorter path: %w", root, len(root), errdefs.ErrInvalid)
	}
	for _, d := range []string{root, s.runDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
	}
	if s.locs, err = locations.New(filepath.Join(root, "vms"), o.Storage); err != nil {
		return nil, err
	}
	if s.env, err = hostenv.New(ctx, hostenv.Options{QEMUBinary: o.QEMUBinary, Accel: o.Accel, Prober: o.Prober, Log: s.log}); err != nil {
		return nil, err
	}
	if s.disk, err = disk.NewTool(); err != nil {
		return nil, err
	}
	s.tracker = blockops.Tracker{Tool: s.disk, Log: s.log}
	if s.net, err = netdev.NewManager(filepath.Join(root, "net"), s.log); err != nil {
		return nil, err
	}
	s.newFeatures(o)
	// Switches come back before VMs, whose taps join them.
	if err := s.net.Restore(ctx); err != nil {
		s.log.Error("restoring virtual switches; VMs on them will not start until this is fixed", "err", err)
	}
	if err := s.recoverAll(ctx); err != nil {
		return nil, err
	}
	go s.persistLoop(s.stop)
	return s, nil
}

// Close stops hvd's watchers. Running VMs keep running: QEMU outlives hvd.
func (s *Service) Close() {
	close(s.stop)
	defer s.net.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.vms {
		v.mu.Lock()
		if v.sess != nil {
			v.sess.detach()
		}
		v.mu.Unlock()
	}
}

// Backups is the backup API (the httpapi Backups role).
func (s *Service) Backups() *backup.Service { return s.backups }

// Checkpoints is the checkpoint API (the httpapi Checkpoints role).
func (s *Service) Checkpoints() *checkpoints.Service { return s.ckpts }

// Ops returns the operation manager (the API serves operations from it).
func (s *Service) Ops() *operation.Manager { return s.ops }

func (s *Service) hook(point string) {
	if s.hooks != nil {
		s.hooks(point)
	}
}

// Info describes the host.
func (s *Service) Info() api.HostInfo {
	info := s.env.Info()
	info.Version, info.APIVersion, info.Root = Version, api.Version, s.root
	info.ConfigVersion, info.ConfigVersions = vmconfig.CurrentVersion, vmconfig.SupportedVersions()
	info.Storage = s.Storage()
	for _, v := range s.list() {
		info.VMs++
		if st := v.snapshotState(); st == api.StateRunning || st == api.StatePaused {
			info.VMsRunning++
		}
	}
	return info
}

// currentAccel is the accelerator a VM starting now gets.
func (s *Service) currentAccel() qemu.Accel { return s.env.Accel() }

// plan checks VM settings against this host.
func (s *Service) plan() vmplan.Host {
	return vmplan.Host{Firmware: s.env.Firmware, Images: s.disk, Accel: s.currentAccel}
}

// RefreshHost probes the accelerator again (after a module was loaded, nested
// virtualization enabled, ...): VMs that start from now on get the new result;
// running VMs keep what they started with.
func (s *Service) RefreshHost(ctx context.Context) (api.HostInfo, error) {
	if _, err := s.env.Probe(ctx); err != nil {
		return api.HostInfo{}, err
	}
	return s.Info(), nil
}

// list returns the registered VMs (not placeholders) sorted by name.
func (s *Service) list() []*vm {
	s.mu.Lock()
	out := make([]*vm, 0, len(s.vms))
	for _, v := range s.vms {
		if !v.placeholder {
			out = append(out, v)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (s *Service) get(name string) (*vm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vms[name]
	if !ok || v.placeholder {
		return nil, errdefs.WithHint(fmt.Errorf("VM %q not found: %w", name, errdefs.ErrNotFound), "see the list of VMs for their names")
	}
	return v, nil
}

// ListVMs returns every VM.
func (s *Service) ListVMs() []api.VM {
	vs := s.list()
	out := make([]api.VM, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.toAPI(s.currentAccel().Name))
	}
	return out
}

// GetVM returns one VM, with its disks' current sizes.
func (s *Service) GetVM(ctx context.Context, name string) (api.VM, error) {
	v, err := s.get(name)
	if err != nil {
		return api.VM{}, err
	}
	out := v.toAPI(s.currentAccel().Name)
	v.mu.Lock()
	ss, maxMem := v.sess, v.rt.MaxMemoryBytes
	v.mu.Unlock()
	if ss != nil {
		if m, err := ss.Memory(ctx, maxMem); err == nil {
			out.AssignedMemoryBytes = m.Assigned()
		}
	}
	sizes := s.diskSizes(ctx, v, out.Disks)
	for i, d := range out.Disks {
		out.Disks[i].VirtualBytes = sizes[d.Path]
	}
	return out, nil
}

// diskSizesFor is how long disk sizes are trusted: sizes change only by resize,
// and reading them costs a qemu-img process, which a client polling the VM
// would otherwise pay on every request.
const diskSizesFor = 30 * time.Second

func (s *Service) diskSizes(ctx context.Context, v *vm, disks []api.Disk) map[string]uint64 {
	v.mu.Lock()
	cached, at := v.diskSizes, v.diskSizesAt
	v.mu.Unlock()
	fresh := time.Since(at) < diskSizesFor && len(cached) == len(disks)
	for _, d := range disks {
		if _, ok := cached[d.Path]; !ok {
			fresh = false
		}
	}
	if fresh {
		return cached
	}
	sizes := map[string]uint64{}
	for _, d := range disks {
		// -U in Info reads the header even while QEMU holds the image.
		if info, err := s.disk.Info(ctx, d.Path); err == nil {
			sizes[d.Path] = info.VirtualBytes
		}
	}
	v.mu.Lock()
	v.diskSizes, v.diskSizesAt = sizes, time.Now()
	v.mu.Unlock()
	return sizes
}

func (s *Service) publishVM(v *vm, action, msg string) {
	if s.bus == nil {
		return
	}
	s.bus.Publish(api.Event{Type: "vm", Resource: "/1.0/vms/" + v.name, Action: action, Message: msg, Metadata: v.toAPI(s.currentAccel().Name)})
}

// persistEvery is how often states that could not be written are retried.
const persistEvery = 5 * time.Second

// persistLoop writes the runtime states that setFactLocked could only keep
// in memory (a full disk), once the disk takes them.
func (s *Service) persistLoop(stop <-chan struct{}) {
	t := time.NewTicker(persistEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for _, v := range s.list() {
			v.mu.Lock()
			if v.unsaved == nil {
				v.mu.Unlock()
				continue
			}
			err := v.store.SaveRuntime(v.Dir(), v.rt)
			if err == nil {
				v.unsaved = nil
			}
			v.mu.Unlock()
			if err == nil {
				s.log.Info("VM state recorded on disk at last", "vm", v.name)
				s.publishVM(v, "state-changed", "recorded on disk")
			}
		}
	}
}

// cleanupTimeout bounds an undo step: it runs after the operation's own
// context may have ended (canceled, timed out), so it cannot use that one,
// but it must never hang with the VM's lock held (a QEMU that stopped
// answering, a netlink call stuck behind another).
const cleanupTimeout = 30 * time.Second

// cleanupCtx is the context of an undo step.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cleanupTimeout)
}

// errWrap keeps the kind of err (for the HTTP code) while adding context.
func errWrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}
