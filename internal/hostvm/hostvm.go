// Package hostvm is the contract between hvd's host service (internal/host:
// the registry of VMs, their locks and state machine) and the features built
// on it (internal/feature/...: checkpoints, backups, export and import, the
// integration services' API, devices; later migration and replica). A
// feature sees a VM only through VM, and the host only through Host, so that
// a feature is a room of its own: it imports neither internal/host nor
// another feature, and is unit-tested with fakes of these interfaces.
package hostvm

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hvproject/hv/api"

	"github.com/hvproject/hv/internal/blockops"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qmp"
	"github.com/hvproject/hv/internal/vmconfig"
)

// SavedState is the file of a VM's directory that holds its saved memory and
// device state: with the VM in state Saved, a start restores it.
const SavedState = "state.save"

// VM is one VM of this host, as a feature sees it during one call or
// operation (a feature keeps no VM past it: the VM may be deleted).
type VM interface {
	Name() string
	ID() string
	Dir() string                // its directory: disks, NVRAM, memory state
	Path(file string) string    // a file of its directory
	RunPath(file string) string // a socket of its run directory
	Config() vmconfig.Config    // a copy
	Runtime() vmconfig.Runtime  // a copy
	State() string
	// Uptime is how long the guest has run, saves and restores included
	// (0 when it is off).
	Uptime() time.Duration
	// UpdateConfig changes the configuration: fn gets a copy of the current
	// one; what it leaves is written durably and becomes the VM's.
	UpdateConfig(fn func(*vmconfig.Config) error) (vmconfig.Config, error)
	// UpdateRuntime changes the runtime record durably (fn gets it to edit).
	UpdateRuntime(fn func(*vmconfig.Runtime)) error
	// SetState records a state durably, or not at all (the caller undoes).
	SetState(state, reason string) error
	// RecordFact records what happened to the VM's running QEMU (its
	// guest paused on a disk error, it runs again) while ss is still that
	// QEMU: fn edits a copy of the runtime record (its State, Reason and
	// CriticalSince are kept) and says whether to keep it. Unlike SetState
	// a fact stays true when the disk refuses the record: it is kept in
	// memory, written when the disk allows, and the error says so. changed
	// is false when ss is gone or fn left the record.
	RecordFact(ss Session, fn func(rt *vmconfig.Runtime) bool) (changed bool, err error)
	// Session is the VM's running QEMU, when it has one.
	Session() (Session, bool)
	Guest() *guest.Guest
	// CannotFreeze says why the guest cannot freeze now ("" when it can).
	CannotFreeze() string
	// Freeze freezes the guest's file systems for at most timeout seconds
	// (0: the default), Thaw ends it; both announce it.
	Freeze(ctx context.Context, timeout int) (api.FreezeStatus, error)
	Thaw() api.FreezeStatus
	// Publish announces a change of the VM on hvd's event stream.
	Publish(action, msg string)
	// API is the VM as the API shows it (its disks' current sizes left
	// out): what an operation on it returns.
	API() api.VM
}

// Session is a VM's running QEMU: its machine and its block layer.
type Session interface {
	Machine
	Block() Block
	// Gone is closed once QEMU is gone and the host has cleaned up after it.
	Gone() <-chan struct{}
}

// Machine is what hv asks of a running QEMU (a *machine.Machine, or a fake).
type Machine interface {
	Pid() int
	Exited() <-chan struct{}
	End() (reason string, expected bool)
	ExpectExit(on bool)
	Kill() error
	Detach()
	Pause(ctx context.Context) error
	Cont(ctx context.Context) error
	PowerButton(ctx context.Context) error
	Status(ctx context.Context) (qmp.StatusInfo, error)
	Quit()
	WaitIncoming(ctx context.Context) error
	Flush(ctx context.Context) error
	SaveState(ctx context.Context, path string, progress func(done, total uint64)) error
	CancelSave(ctx context.Context) error
	PlugNIC(ctx context.Context, n machine.NIC) error
	RemoveNetdev(ctx context.Context, id string) error
	PlugDisk(ctx context.Context, d machine.Disk) error
	CloseImage(ctx context.Context, path string)
	Unplug(ctx context.Context, id string) error
	Memory(ctx context.Context, maxMem uint64) (machine.Memory, error)
	SetPlugged(ctx context.Context, size uint64) error
	SetBalloon(ctx context.Context, bytes uint64) error
	PollBalloonStats(ctx context.Context) error
	BalloonStats(ctx context.Context) (qmp.GuestStats, error)

	// Live migration (see machine/migrate.go): the source's side...
	MachineType(ctx context.Context) (string, error)
	MirrorDisks(ctx context.Context, out machine.Outgoing, progress func(machine.MigrationProgress)) error
	MigrateState(ctx context.Context, out machine.Outgoing, progress func(machine.MigrationProgress)) (machine.MigrationProgress, error)
	AbortOutgoing(ctx context.Context, out machine.Outgoing, resume bool)
	CloseOutgoing(ctx context.Context, out machine.Outgoing)
	// ...and the target's.
	ListenIncoming(ctx context.Context, in machine.Incoming, autoConverge bool) error
	WaitIncomingDone(ctx context.Context) error
	CloseIncoming(ctx context.Context, in machine.Incoming)
}

var _ Machine = (*machine.Machine)(nil)

// Block is a running VM's block layer (a *blockops.Live, or a fake).
type Block interface {
	blockops.Images
	OpenOverlay(ctx context.Context, file string) error
	CloseImage(ctx context.Context, file string)
	ImageBitmaps(ctx context.Context, files []string) (map[string][]blockops.Bitmap, error)
	Switch(ctx context.Context, overlays []checkpoint.Overlay, bitmaps map[string][]blockops.Bitmap) error
	Writing(ctx context.Context, files []string) (bool, error)
	OpenView(ctx context.Context, d blockops.ViewDisk) error
	TakePointInTime(ctx context.Context, disks []blockops.ViewDisk, ref, since string) error
	ExportView(ctx context.Context, socket string, disks []blockops.ViewDisk, ref string) error
	CloseView(ctx context.Context, disks []blockops.ViewDisk, remove []string)
}

var _ Block = (*blockops.Live)(nil)

// Work is an operation's body on a VM whose lock it holds.
type Work func(ctx context.Context, op *operation.Op, v VM) (any, error)

// Host is what a feature asks of the host service.
type Host interface {
	// VM finds a VM by name (a not-found error that says so otherwise).
	VM(name string) (VM, error)
	// VMs lists the VMs.
	VMs() []VM
	// Locked takes the VM's lock, checks that action may run in its state
	// (and not during an open backup unless allowed), and runs work as an
	// operation of kind that holds the lock until it ends. A refused action
	// is an error at once, never a failed operation.
	Locked(v VM, kind, action string, work Work) (*operation.Op, error)
	// WithLock waits (bounded by ctx) for the VM's lock and runs fn holding it.
	WithLock(ctx context.Context, v VM, kind string, fn func() error) error
	// TryLock takes the VM's lock for kind at once, or fails with a
	// conflict naming what holds it; unlock lets go. cancel (nil: none) is
	// what a kill of the VM calls to end the holder's work, for work that
	// outlives the call (a merge resumed in the background).
	TryLock(v VM, kind string, cancel context.CancelFunc) (unlock func(), err error)
	// Describe is the VM as the API shows it (an operation's result).
	Describe(v VM) api.VM
	// Operations runs work that holds no VM lock.
	Operations() *operation.Manager
	// Start starts (or restores) a VM whose lock the caller holds.
	Start(ctx context.Context, op *operation.Op, v VM) error
	// TurnOff kills a running VM's QEMU and records it Off with reason.
	TurnOff(v VM, reason string) error
	Disk() *disk.Tool
	Log() *slog.Logger
	// Hook marks a named point of an operation (crash tests stop hvd there).
	Hook(point string)
	// CheckAction says whether action may run in the VM's state now, without
	// taking its lock (for work that does not hold it, such as exec): a
	// refusal is a conflict that names the state and the way forward.
	CheckAction(v VM, action string) error
	// Reserve holds a name, and an ID unless id is "", for a VM that a
	// feature makes from files (an import; a migration target, a replica),
	// and gives it a hidden directory in hvd's store to prepare them in. A
	// name or ID another VM has, or one being made, is a *Taken error.
	Reserve(name, id string) (Reservation, error)
	// InStore reports whether path lies inside hvd's store of VMs, which
	// only hvd may write.
	InStore(path string) bool
	// ImagesChanged drops what the host caches of image files (their
	// sizes), after one changed outside any operation of its VM.
	ImagesChanged()
}

// Reservation is a VM being made: its name held, and the directory where its
// files are prepared. A crash of hvd before Adopt leaves nothing: hvd
// removes such directories when it starts. Every reservation ends in Adopt
// or Release.
type Reservation interface {
	Name() string
	// Dir is the hidden directory, in hvd's store, to prepare the VM's
	// files in (disks, NVRAM, checkpoints); the host writes its records.
	Dir() string
	// Adopt makes the VM exist, in one step that cannot leave half a VM:
	// it records cfg (its Name the reserved one, its ID the reserved one
	// when one was reserved) and rt, renames Dir into place and registers
	// the VM. On an error the VM does not exist (Dir may hold the records
	// written) and the reservation still holds.
	Adopt(cfg vmconfig.Config, rt vmconfig.Runtime) (VM, error)
	// Release removes Dir and frees the name; after Adopt it does nothing,
	// so it may be deferred (or put on an undo stack) right away.
	Release()
}

// Taken is Reserve's refusal: the name (By "") or the ID (By the VM that has
// it) belongs to another VM, or to one being made. It is a conflict; the
// caller words it for its user.
type Taken struct {
	Name, ID, By string
}

func (e *Taken) Error() string {
	if e.By != "" {
		return fmt.Sprintf("VM %s has ID %s already: %v", e.By, e.ID, errdefs.ErrConflict)
	}
	return fmt.Sprintf("name: VM %q already exists: %v", e.Name, errdefs.ErrConflict)
}

func (e *Taken) Unwrap() error { return errdefs.ErrConflict }
