package migration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/undo"
	"github.com/hvproject/hv/internal/vmconfig"
)

// IdleTimeout is how long a target waits for the source's next step (a
// file, prepare, the migration stream's progress, commit) before it aborts
// on its own.
const IdleTimeout = 5 * time.Minute

// maxFiles and maxFileBytes bound what a source may announce.
const (
	maxFiles     = 4096
	maxFileBytes = 16 << 40
)

// Host is what the migration feature asks of the host service.
type Host interface {
	hostvm.Host
	// StagingDir is where incoming VMs are assembled: a directory on the
	// same file system as the VMs', which hvd's scan of VMs skips.
	StagingDir() string
	// Adopt registers the VM assembled in dir (under StagingDir) as an
	// import registers one: checked as hostile, moved into place. It is
	// Off (Saved when it has a saved state).
	Adopt(ctx context.Context, dir string) (hostvm.VM, error)
	// StartIncoming starts v's QEMU waiting for a migration, its CPUs
	// stopped; the caller's operation holds v's lock.
	StartIncoming(ctx context.Context, op *operation.Op, v hostvm.VM) (hostvm.Session, error)
	// Forget removes v, whose QEMU is gone, from the registry, and its
	// files unless keep.
	Forget(ctx context.Context, v hostvm.VM, keep bool) error
	// Info describes this host (versions, accelerator, firmware).
	Info() api.HostInfo
	// Save saves a running VM whose lock the caller holds (its memory to
	// its saved state file, QEMU ended), for a quick move.
	Save(ctx context.Context, op *operation.Op, v hostvm.VM) error
}

// Target holds the incoming migrations of this host.
type Target struct {
	h          Host
	log        *slog.Logger
	listenHost string // where QEMU listens for the source: the API's address
	records    *records
	idle       time.Duration // IdleTimeout, shorter in tests

	mu   sync.Mutex
	runs map[string]*incoming // by migration ID
}

// incoming is one migration on its way in.
type incoming struct {
	mu     sync.Mutex
	m      api.Migration
	req    api.MigrationCreate
	cfg    vmconfig.Config
	dir    string // the staging directory, until prepared
	got    map[string]int64
	vm     hostvm.VM
	in     machine.Incoming
	eph    *Ephemeral
	timer  *time.Timer
	idle   time.Duration
	end    chan error     // tells the operation holding the VM's lock to abort
	commit chan commitReq // or to commit
	done   chan struct{}  // closed when that operation ends
}

// NewTarget returns the incoming side of migrations. listenHost is the
// address QEMU listens on for sources (the API listener's host).
func NewTarget(h Host, listenHost string, recordsDir string) *Target {
	return &Target{h: h, log: h.Log(), listenHost: listenHost, records: &records{dir: recordsDir}, idle: IdleTimeout, runs: map[string]*incoming{}}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Create starts an incoming migration of req's VM from source (the calling
// host's certificate name).
func (t *Target) CreateMigration(ctx context.Context, source string, req api.MigrationCreate) (api.Migration, error) {
	if t.listenHost == "" {
		return api.Migration{}, errdefs.WithHint(fmt.Errorf("this host serves no network address, so it cannot receive VMs: %w", errdefs.ErrUnavailable),
			"start hvd with --listen")
	}
	cfg, err := t.checkCreate(req)
	if err != nil {
		return api.Migration{}, err
	}
	id := newID()
	dir := filepath.Join(t.h.StagingDir(), ".incoming-"+id)
	if err := os.MkdirAll(t.h.StagingDir(), 0o700); err != nil {
		return api.Migration{}, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return api.Migration{}, fmt.Errorf("staging the incoming VM: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, vmconfig.FileName), req.Config, 0o600); err != nil {
		os.RemoveAll(dir)
		return api.Migration{}, err
	}
	in := &incoming{m: api.Migration{ID: id, VM: cfg.Name, VMID: cfg.ID, Source: source, State: api.MigrationReceiving,
		Live: req.Live, CreatedAt: time.Now().UTC()}, req: req, cfg: cfg, dir: dir, got: map[string]int64{},
		end: make(chan error, 1), commit: make(chan commitReq), done: make(chan struct{})}
	t.mu.Lock()
	t.runs[id] = in
	t.mu.Unlock()
	in.idle = t.idle
	in.timer = time.AfterFunc(t.idle, func() { t.expire(id) })
	t.log.Info("incoming migration", "migration", id, "vm", cfg.Name, "from", source, "live", req.Live, "files", len(req.Files))
	return in.snapshot(), nil
}

// checkCreate refuses what this host cannot or must not take: a bad
// configuration, a name or ID in use, files it would not keep, a machine
// it cannot run.
func (t *Target) checkCreate(req api.MigrationCreate) (vmconfig.Config, error) {
	cfg, _, err := vmconfig.Parse("config", req.Config)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if _, err := t.h.VM(cfg.Name); err == nil {
		return cfg, errdefs.WithHint(fmt.Errorf("a VM named %s exists on this host: %w", cfg.Name, errdefs.ErrConflict),
			"rename or remove one of them")
	}
	for _, v := range t.h.VMs() {
		if v.ID() == cfg.ID {
			return cfg, fmt.Errorf("VM %s on this host has the same ID %s (a copy of the VM?): %w", v.Name(), cfg.ID, errdefs.ErrConflict)
		}
	}
	t.mu.Lock()
	for _, r := range t.runs {
		if r.cfg.ID == cfg.ID || r.cfg.Name == cfg.Name {
			t.mu.Unlock()
			return cfg, fmt.Errorf("VM %s is already on its way here (migration %s): %w", cfg.Name, r.m.ID, errdefs.ErrConflict)
		}
	}
	t.mu.Unlock()
	if err := checkFiles(req); err != nil {
		return cfg, err
	}
	if err := Compatible(req, t.h.Info()); err != nil {
		return cfg, err
	}
	if req.CACert != "" || req.Live {
		if err := checkPeerCA("ca_cert", []byte(req.CACert)); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// checkFiles refuses file names that are not plain names of the VM's
// directory, repeats, and sizes out of bounds.
func checkFiles(req api.MigrationCreate) error {
	if len(req.Files) > maxFiles {
		return fmt.Errorf("files: %d; at most %d: %w", len(req.Files), maxFiles, errdefs.ErrInvalid)
	}
	seen := map[string]bool{vmconfig.FileName: true}
	for _, f := range req.Files {
		if err := plainName("files", f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("files: %q is named twice (or is the configuration, sent apart): %w", f.Name, errdefs.ErrInvalid)
		}
		seen[f.Name] = true
		if f.Size < 0 || f.Size > maxFileBytes {
			return fmt.Errorf("files: %q has size %d: %w", f.Name, f.Size, errdefs.ErrInvalid)
		}
	}
	for _, top := range req.Tops {
		if err := plainName("tops", top.File); err != nil {
			return err
		}
		if seen[top.File] {
			return fmt.Errorf("tops: %q is also sent as a file: %w", top.File, errdefs.ErrInvalid)
		}
		seen[top.File] = true
		if top.Backing != "" {
			if err := plainName("tops", top.Backing); err != nil {
				return err
			}
		}
	}
	return nil
}

func plainName(field, name string) error {
	if !vmconfig.LocalFile(name) || name == vmconfig.FileName || name == "" || name[0] == '.' {
		return fmt.Errorf("%s: %q is not a file name of a VM's directory: %w", field, name, errdefs.ErrInvalid)
	}
	return nil
}

func (in *incoming) snapshot() api.Migration {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.m
}

// touch puts off the idle abort.
func (in *incoming) touch() { in.timer.Reset(in.idle) }

func (t *Target) get(id string, source string) (*incoming, error) {
	t.mu.Lock()
	in := t.runs[id]
	t.mu.Unlock()
	if in == nil {
		return nil, fmt.Errorf("migration %s: %w", id, errdefs.ErrNotFound)
	}
	if in.m.Source != source {
		// Only the host that started it may drive it.
		return nil, fmt.Errorf("migration %s: %w", id, errdefs.ErrNotFound)
	}
	return in, nil
}

// PutFile receives one announced file of exactly its size.
func (t *Target) PutMigrationFile(ctx context.Context, source, id, name string, r io.Reader) error {
	in, err := t.get(id, source)
	if err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m.State != api.MigrationReceiving {
		return fmt.Errorf("migration %s is %s; files come before prepare: %w", id, in.m.State, errdefs.ErrConflict)
	}
	size := int64(-1)
	for _, f := range in.req.Files {
		if f.Name == name {
			size = f.Size
		}
	}
	if size < 0 {
		return fmt.Errorf("file %q was not announced for migration %s: %w", name, id, errdefs.ErrInvalid)
	}
	if _, ok := in.got[name]; ok {
		return fmt.Errorf("file %q arrived already: %w", name, errdefs.ErrConflict)
	}
	in.touch()
	if err := receive(filepath.Join(in.dir, name), r, size, in.touch); err != nil {
		return fmt.Errorf("file %s: %w", name, err)
	}
	in.got[name] = size
	return nil
}

// receive writes exactly size bytes from r into a new file at path, synced.
func receive(path string, r io.Reader, size int64, alive func()) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	buf := make([]byte, 1<<20)
	var n int64
	for n < size {
		k, rerr := r.Read(buf[:min(int64(len(buf)), size-n)])
		if k > 0 {
			if err := writeSparse(f, buf[:k], n); err != nil {
				return err
			}
			n += int64(k)
			alive()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("after %d of %d bytes: %w", n, size, rerr)
		}
	}
	if n != size {
		return fmt.Errorf("%d of %d bytes arrived: %w", n, size, errdefs.ErrInvalid)
	}
	if extra, _ := r.Read(buf[:1]); extra > 0 {
		return fmt.Errorf("more than the %d bytes announced arrived: %w", size, errdefs.ErrInvalid)
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// writeSparse writes p at off, leaving blocks of zeros as holes (images
// and memory states are mostly zeros).
func writeSparse(f *os.File, p []byte, off int64) error {
	const blk = 64 << 10
	for i := 0; i < len(p); i += blk {
		b := p[i:min(i+blk, len(p))]
		if allZero(b) {
			continue
		}
		if _, err := f.WriteAt(b, off+int64(i)); err != nil {
			return err
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Get returns a migration's state. A migration this host does not know was
// never committed here (committed ones are kept on disk), so the source may
// run its VM again.
func (t *Target) GetMigration(source, id string) (api.Migration, error) {
	if in, err := t.get(id, source); err == nil {
		return in.snapshot(), nil
	}
	m, err := t.records.load(id)
	if err != nil || m.Source != source {
		return api.Migration{}, fmt.Errorf("migration %s: %w", id, errdefs.ErrNotFound)
	}
	return m, nil
}

// freePort picks a port free now on host (QEMU binds it a moment later).
func freePort(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Abort ends a migration that was not committed: the target's QEMU, the
// VM's registration and every file of it go. A committed one cannot be
// aborted: the VM runs here.
func (t *Target) AbortMigration(ctx context.Context, source, id string) error {
	in, err := t.get(id, source)
	if err != nil {
		if m, rerr := t.records.load(id); rerr == nil && m.Source == source && m.State == api.MigrationCommitted {
			return fmt.Errorf("migration %s was committed: the VM runs on this host: %w", id, errdefs.ErrConflict)
		}
		return nil // nothing of it is here
	}
	return t.abort(ctx, in, errors.New("the source aborted the migration"))
}

func (t *Target) expire(id string) {
	t.mu.Lock()
	in := t.runs[id]
	t.mu.Unlock()
	if in == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), undo.Timeout)
	defer cancel()
	if err := t.abort(ctx, in, fmt.Errorf("the source sent nothing for %s", t.idle)); err != nil {
		t.log.Error("aborting an idle incoming migration", "migration", id, "err", err)
	}
}

// abort undoes an uncommitted migration. Prepared, the operation holding
// the VM's lock is told to end it (it kills QEMU and forgets the VM).
func (t *Target) abort(ctx context.Context, in *incoming, why error) error {
	in.mu.Lock()
	state := in.m.State
	in.mu.Unlock()
	switch state {
	case api.MigrationCommitted:
		return fmt.Errorf("migration %s was committed: the VM runs on this host: %w", in.m.ID, errdefs.ErrConflict)
	case api.MigrationPrepared:
		select {
		case in.end <- why:
		default:
		}
		select {
		case <-in.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	default:
		os.RemoveAll(in.dir)
		t.finish(in, api.MigrationAborted, why)
	}
	return nil
}

// finish records how a migration ended and forgets it in memory. Only a
// commit is kept on disk: a migration the target does not know was not
// committed.
func (t *Target) finish(in *incoming, state string, why error) {
	in.timer.Stop()
	in.mu.Lock()
	in.m.State = state
	if why != nil {
		in.m.Error = why.Error()
	}
	m := in.m
	in.mu.Unlock()
	t.mu.Lock()
	delete(t.runs, m.ID)
	t.mu.Unlock()
	if state == api.MigrationAborted {
		t.log.Warn("incoming migration aborted", "migration", m.ID, "vm", m.VM, "from", m.Source, "why", m.Error)
	} else {
		t.log.Info("incoming migration "+state, "migration", m.ID, "vm", m.VM, "from", m.Source)
	}
}
