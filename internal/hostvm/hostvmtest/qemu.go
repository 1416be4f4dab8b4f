package hostvmtest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/tracking"
)

// A fake running QEMU for the unit tests of features: a Session whose
// Machine and Block record every call in one Script, in order, and fail
// where the test scripts it, so that a test can make any step of an
// operation fail (or QEMU exit there) and check what the feature left.

// ErrInjected is what a scripted failure returns when the test gives no
// error of its own.
var ErrInjected = fmt.Errorf("injected failure: %w", errdefs.ErrUnavailable)

// ErrExited is what every call returns once the fake QEMU has exited.
var ErrExited = fmt.Errorf("QEMU exited: %w", errdefs.ErrUnavailable)

// Script records the calls made to a fake QEMU ("Method arg ...") and
// decides which fail. Its zero value records and fails nothing.
type Script struct {
	mu     sync.Mutex
	calls  []string
	rules  []*rule
	exited bool
	onExit func() // closes the machine's channels
}

// rule is one scripted failure.
type rule struct {
	method string // the method whose calls fail
	nth    int    // the nth call of method fails (1: the first); 0: every one
	any    bool   // every call of any method after the first `after` fails
	after  int
	err    error
	exit   bool // QEMU exits at that call
	seen   int
}

// FailAt makes the nth call (1: the first; 0: every call) of method fail
// with err (nil: ErrInjected).
func (s *Script) FailAt(method string, nth int, err error) {
	s.add(&rule{method: method, nth: nth, err: err})
}

// FailAfter makes every call after the first n (of any method) fail with
// err (nil: ErrInjected).
func (s *Script) FailAfter(n int, err error) { s.add(&rule{any: true, after: n, err: err}) }

// ExitAt makes QEMU exit at the nth call of method (1: the first): that
// call and every later one fail with ErrExited, and Exited and Gone close.
func (s *Script) ExitAt(method string, nth int) {
	s.add(&rule{method: method, nth: nth, exit: true})
}

// Heal drops every scripted failure (a retry after the fault was fixed).
func (s *Script) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = nil
}

func (s *Script) add(r *rule) {
	if r.err == nil {
		r.err = ErrInjected
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = append(s.rules, r)
}

// Calls returns the calls made so far, in order, as "Method arg ...".
func (s *Script) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Count says how many times method was called.
func (s *Script) Count(method string) int {
	n := 0
	for _, c := range s.Calls() {
		if c == method || strings.HasPrefix(c, method+" ") {
			n++
		}
	}
	return n
}

// call records a call and returns its scripted failure, if any.
func (s *Script) call(method string, args ...string) error {
	s.mu.Lock()
	s.calls = append(s.calls, strings.Join(append([]string{method}, args...), " "))
	if s.exited {
		s.mu.Unlock()
		return ErrExited
	}
	total := len(s.calls)
	var hit *rule
	for _, r := range s.rules {
		switch {
		case r.any && total > r.after:
			hit = r
		case r.method == method:
			r.seen++
			if r.nth == 0 || r.seen == r.nth {
				hit = r
			}
		}
		if hit != nil {
			break
		}
	}
	exit := hit != nil && hit.exit
	s.mu.Unlock()
	switch {
	case exit:
		s.exit()
		return ErrExited
	case hit != nil:
		return fmt.Errorf("%s: %w", method, hit.err)
	}
	return nil
}

func (s *Script) exit() {
	s.mu.Lock()
	already := s.exited
	s.exited = true
	onExit := s.onExit
	s.mu.Unlock()
	if !already && onExit != nil {
		onExit()
	}
}

// Machine is a fake hostvm.Machine. It starts running; Pause and Cont
// change that, and Status reports it.
type Machine struct {
	*Script
	PID int

	mu      sync.Mutex
	running bool
	reason  string
	exited  chan struct{}
	gone    chan struct{}
}

// NewMachine returns a running machine that records into s.
func NewMachine(s *Script) *Machine {
	m := &Machine{Script: s, PID: 4242, running: true, exited: make(chan struct{}), gone: make(chan struct{})}
	s.onExit = func() {
		m.mu.Lock()
		if m.reason == "" {
			m.reason = "QEMU exited"
		}
		m.running = false
		m.mu.Unlock()
		close(m.exited)
		close(m.gone)
	}
	return m
}

var _ hostvm.Machine = (*Machine)(nil)

// Exit makes QEMU exit now: Exited and Gone close, and every later call
// fails with ErrExited.
func (m *Machine) Exit(reason string) {
	m.mu.Lock()
	m.reason = reason
	m.mu.Unlock()
	m.exit()
}

// Running says whether the guest runs (not paused, not exited).
func (m *Machine) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running
}

func (m *Machine) setRunning(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = on
}

func (m *Machine) Pid() int                { return m.PID }
func (m *Machine) Exited() <-chan struct{} { return m.exited }
func (m *Machine) Detach()                 { _ = m.call("Detach") }
func (m *Machine) ExpectExit(on bool)      { _ = m.call("ExpectExit", fmt.Sprint(on)) }

func (m *Machine) End() (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason, false
}

func (m *Machine) Kill() error {
	if err := m.call("Kill"); err != nil && err != ErrExited {
		return err
	}
	m.Exit("killed")
	return nil
}

func (m *Machine) Quit() {
	_ = m.call("Quit")
	m.Exit("quit")
}

func (m *Machine) Pause(ctx context.Context) error {
	if err := m.call("Pause"); err != nil {
		return err
	}
	m.setRunning(false)
	return nil
}

func (m *Machine) Cont(ctx context.Context) error {
	if err := m.call("Cont"); err != nil {
		return err
	}
	m.setRunning(true)
	return nil
}

func (m *Machine) Status(ctx context.Context) (qmp.StatusInfo, error) {
	if err := m.call("Status"); err != nil {
		return qmp.StatusInfo{}, err
	}
	if m.Running() {
		return qmp.StatusInfo{Status: "running", Running: true}, nil
	}
	return qmp.StatusInfo{Status: "paused"}, nil
}

// SaveState writes a small state file at path, as QEMU would write memory.
func (m *Machine) SaveState(ctx context.Context, path string, progress func(done, total uint64)) error {
	if err := m.call("SaveState", path); err != nil {
		return err
	}
	if progress != nil {
		progress(1, 1)
	}
	return os.WriteFile(path, []byte("fake QEMU memory state"), 0o600)
}

func (m *Machine) PowerButton(ctx context.Context) error  { return m.call("PowerButton") }
func (m *Machine) WaitIncoming(ctx context.Context) error { return m.call("WaitIncoming") }
func (m *Machine) Flush(ctx context.Context) error        { return m.call("Flush") }
func (m *Machine) CancelSave(ctx context.Context) error   { return m.call("CancelSave") }
func (m *Machine) PlugNIC(ctx context.Context, n machine.NIC) error {
	return m.call("PlugNIC", n.ID)
}
func (m *Machine) RemoveNetdev(ctx context.Context, id string) error {
	return m.call("RemoveNetdev", id)
}
func (m *Machine) PlugDisk(ctx context.Context, d machine.Disk) error {
	return m.call("PlugDisk", d.ID)
}
func (m *Machine) CloseImage(ctx context.Context, path string) { _ = m.call("MachineCloseImage", path) }
func (m *Machine) Unplug(ctx context.Context, id string) error { return m.call("Unplug", id) }
func (m *Machine) Memory(ctx context.Context, maxMem uint64) (machine.Memory, error) {
	return machine.Memory{}, m.call("Memory")
}
func (m *Machine) SetPlugged(ctx context.Context, size uint64) error  { return m.call("SetPlugged") }
func (m *Machine) SetBalloon(ctx context.Context, bytes uint64) error { return m.call("SetBalloon") }
func (m *Machine) PollBalloonStats(ctx context.Context) error         { return m.call("PollBalloonStats") }
func (m *Machine) MachineType(ctx context.Context) (string, error) {
	return "pc-i440fx-7.2", m.call("MachineType")
}
func (m *Machine) MirrorDisks(ctx context.Context, out machine.Outgoing, progress func(machine.MigrationProgress)) error {
	return m.call("MirrorDisks", out.NBD)
}
func (m *Machine) MigrateState(ctx context.Context, out machine.Outgoing, progress func(machine.MigrationProgress)) (machine.MigrationProgress, error) {
	if err := m.call("MigrateState", out.Target); err != nil {
		return machine.MigrationProgress{}, err
	}
	m.setRunning(false)
	return machine.MigrationProgress{Stage: "switch-over"}, nil
}
func (m *Machine) AbortOutgoing(ctx context.Context, out machine.Outgoing, resume bool) {
	_ = m.call("AbortOutgoing", fmt.Sprint(resume))
	if resume {
		m.setRunning(true)
	}
}
func (m *Machine) CloseOutgoing(ctx context.Context, out machine.Outgoing) {
	_ = m.call("CloseOutgoing")
}
func (m *Machine) ListenIncoming(ctx context.Context, in machine.Incoming, autoConverge bool) error {
	return m.call("ListenIncoming", in.Listen)
}
func (m *Machine) WaitIncomingDone(ctx context.Context) error { return m.call("WaitIncomingDone") }
func (m *Machine) CloseIncoming(ctx context.Context, in machine.Incoming) {
	_ = m.call("CloseIncoming")
}
func (m *Machine) BalloonStats(ctx context.Context) (qmp.GuestStats, error) {
	return qmp.GuestStats{}, m.call("BalloonStats")
}

// Block is a fake hostvm.Block: it keeps what QEMU would (the images it has
// open, the disks' top images, bitmaps, a backup's view and exports) and
// leaves the files alone, except that Rebase runs Images when set (e.g.
// blockops.Offline, qemu-img on the real files, standing for a stream job).
type Block struct {
	*Script
	Images blockops.Images

	mu      sync.Mutex
	open    map[string]bool // images QEMU has open
	tops    map[string]bool // the disks' top images: what the guest writes
	bitmaps map[string][]blockops.Bitmap
	views   map[string]blockops.ViewDisk // by node
	exports map[string]bool              // by node
}

// NewBlock returns a block layer recording into s whose disks' top images
// are tops (open, as every image below them would be).
func NewBlock(s *Script, tops ...string) *Block {
	b := &Block{Script: s, open: map[string]bool{}, tops: map[string]bool{}, bitmaps: map[string][]blockops.Bitmap{},
		views: map[string]blockops.ViewDisk{}, exports: map[string]bool{}}
	for _, f := range tops {
		b.open[f], b.tops[f] = true, true
	}
	return b
}

var _ hostvm.Block = (*Block)(nil)

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Open lists the images QEMU has open; Tops the disks' top images; Views
// and Exports a backup's view nodes and NBD exports.
func (b *Block) Open() []string    { b.mu.Lock(); defer b.mu.Unlock(); return keys(b.open) }
func (b *Block) Tops() []string    { b.mu.Lock(); defer b.mu.Unlock(); return keys(b.tops) }
func (b *Block) Views() []string   { b.mu.Lock(); defer b.mu.Unlock(); return keys(b.views) }
func (b *Block) Exports() []string { b.mu.Lock(); defer b.mu.Unlock(); return keys(b.exports) }

// SetBitmaps gives an image bitmaps, as QEMU would hold them.
func (b *Block) SetBitmaps(file string, bms ...blockops.Bitmap) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bitmaps[file] = slices.Clone(bms)
}

// BitmapNames lists the names of an image's bitmaps.
func (b *Block) BitmapNames(file string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, bm := range b.bitmaps[file] {
		out = append(out, bm.Name)
	}
	slices.Sort(out)
	return out
}

func (b *Block) Bitmaps(ctx context.Context, file string) ([]blockops.Bitmap, error) {
	if err := b.call("Bitmaps", file); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.bitmaps[file]), nil
}

func (b *Block) RemoveBitmaps(ctx context.Context, file string, names ...string) error {
	if err := b.call("RemoveBitmaps", append([]string{file}, names...)...); err != nil {
		return err
	}
	b.removeBitmaps(file, names)
	return nil
}

func (b *Block) removeBitmaps(file string, names []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bitmaps[file] = slices.DeleteFunc(b.bitmaps[file], func(bm blockops.Bitmap) bool { return slices.Contains(names, bm.Name) })
}

func (b *Block) addBitmap(file, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bitmaps[file] = append(b.bitmaps[file], blockops.Bitmap{Name: name, Granularity: 65536})
}

// Rebase stands for a stream job: Images does the work on the files.
func (b *Block) Rebase(ctx context.Context, rb checkpoint.Rebase, progress blockops.Progress) error {
	if err := b.call("Rebase", rb.Image, rb.Backing); err != nil {
		return err
	}
	if b.Images != nil {
		if err := b.Images.Rebase(ctx, rb, progress); err != nil {
			return err
		}
	}
	if progress != nil {
		progress(1, 1)
	}
	return nil
}

func (b *Block) OpenOverlay(ctx context.Context, file string) error {
	if err := b.call("OpenOverlay", file); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open[file] = true
	return nil
}

// CloseImage closes an image that is no disk's top (QEMU refuses to close
// one in use; errors are ignored, as by blockops.Live).
func (b *Block) CloseImage(ctx context.Context, file string) {
	if b.call("CloseImage", file) != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tops[file] {
		delete(b.open, file)
	}
}

func (b *Block) ImageBitmaps(ctx context.Context, files []string) (map[string][]blockops.Bitmap, error) {
	if err := b.call("ImageBitmaps", files...); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]blockops.Bitmap{}
	for _, f := range files {
		out[f] = slices.Clone(b.bitmaps[f])
	}
	return out, nil
}

// Switch makes each overlay its disk's top in one step (atomic: a failure
// switches nothing), carrying the reference points' bitmaps over.
func (b *Block) Switch(ctx context.Context, overlays []checkpoint.Overlay, bitmaps map[string][]blockops.Bitmap) error {
	var args []string
	for _, ov := range overlays {
		args = append(args, ov.File)
	}
	if err := b.call("Switch", args...); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ov := range overlays {
		if !b.open[ov.File] || !b.tops[ov.Backing] {
			return fmt.Errorf("switch: %s is not open or %s is no disk's top: %w", ov.File, ov.Backing, errdefs.ErrConflict)
		}
	}
	for _, ov := range overlays {
		delete(b.tops, ov.Backing)
		b.tops[ov.File] = true
		for _, bm := range bitmaps[ov.Backing] {
			if tracking.ReferenceOf(bm.Name) != "" && !bm.Unusable {
				b.bitmaps[ov.File] = append(b.bitmaps[ov.File], blockops.Bitmap{Name: bm.Name, Granularity: bm.Granularity})
			}
		}
	}
	return nil
}

func (b *Block) Writing(ctx context.Context, files []string) (bool, error) {
	if err := b.call("Writing", files...); err != nil {
		return false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range files {
		if !b.tops[f] {
			return false, nil
		}
	}
	return len(files) > 0, nil
}

func (b *Block) OpenView(ctx context.Context, d blockops.ViewDisk) error {
	if err := b.call("OpenView", d.Node); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.views[d.Node] = d
	return nil
}

// TakePointInTime adds the new reference point's bitmap to each disk (and
// the frozen copy of since's to an incremental one).
func (b *Block) TakePointInTime(ctx context.Context, disks []blockops.ViewDisk, ref, since string) error {
	if err := b.call("TakePointInTime", ref, since); err != nil {
		return err
	}
	for _, d := range disks {
		b.addBitmap(d.Active, tracking.BitmapName(ref))
		if d.Incremental {
			b.addBitmap(d.Active, tracking.TempBitmapName(ref))
		}
	}
	return nil
}

func (b *Block) ExportView(ctx context.Context, socket string, disks []blockops.ViewDisk, ref string) error {
	if err := b.call("ExportView", ref); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range disks {
		b.exports[d.Node] = true
	}
	return nil
}

// CloseView takes every step whatever failed, as blockops.Live does.
func (b *Block) CloseView(ctx context.Context, disks []blockops.ViewDisk, remove []string) {
	if b.call("CloseView", remove...) == ErrExited {
		return
	}
	for _, d := range disks {
		b.mu.Lock()
		delete(b.exports, d.Node)
		delete(b.views, d.Node)
		b.mu.Unlock()
		b.removeBitmaps(d.Active, remove)
	}
}

// Session is a fake running QEMU (hostvm.Session): a Machine and a Block
// that record into one Script.
type Session struct {
	*Machine
	Blk *Block
}

// NewSession returns a running QEMU whose disks' top images are tops. When
// it exits, what lived in QEMU goes with it (open images, views, exports);
// the bitmaps stay, as persistent ones do in the image files.
func NewSession(tops ...string) *Session {
	s := &Script{}
	m, b := NewMachine(s), NewBlock(s, tops...)
	exit := s.onExit
	s.onExit = func() {
		b.mu.Lock()
		clear(b.open)
		clear(b.tops)
		clear(b.views)
		clear(b.exports)
		b.mu.Unlock()
		exit()
	}
	return &Session{Machine: m, Blk: b}
}

var _ hostvm.Session = (*Session)(nil)

func (s *Session) Block() hostvm.Block   { return s.Blk }
func (s *Session) Gone() <-chan struct{} { return s.gone }
