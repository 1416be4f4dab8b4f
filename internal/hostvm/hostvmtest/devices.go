package hostvmtest

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/qmp"
)

// DeviceMachine is a fake running QEMU for the devices' tests: it keeps the
// devices plugged in and the memory, records every call that changes them,
// and fails a call when its error field is set.
type DeviceMachine struct {
	PlugNICErr, PlugDiskErr, UnplugErr, SetPluggedErr error
	Stats                                             qmp.GuestStats // what BalloonStats returns

	mu      sync.Mutex
	mem     machine.Memory
	devices map[string]bool // by QEMU id: plugged devices and netdevs ("-net")
	calls   []string
	exited  chan struct{}
}

// NewDeviceMachine is a machine with mem, and devices already plugged.
func NewDeviceMachine(mem machine.Memory, devices ...string) *DeviceMachine {
	m := &DeviceMachine{mem: mem, devices: map[string]bool{}, exited: make(chan struct{})}
	for _, d := range devices {
		m.devices[d] = true
	}
	return m
}

var _ hostvm.Machine = (*DeviceMachine)(nil)

func (m *DeviceMachine) record(format string, a ...any) {
	m.calls = append(m.calls, fmt.Sprintf(format, a...))
}

// Calls lists the calls that changed the machine, in order ("PlugNIC nic-eth1").
func (m *DeviceMachine) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.calls...)
}

// Devices lists what is plugged in, sorted: device ids, and netdevs as ID-net.
func (m *DeviceMachine) Devices() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for d := range m.devices {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// Mem is the machine's memory now.
func (m *DeviceMachine) Mem() machine.Memory {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mem
}

func (m *DeviceMachine) PlugNIC(ctx context.Context, n machine.NIC) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("PlugNIC %s", n.ID)
	if m.PlugNICErr != nil {
		return m.PlugNICErr // as the machine does: nothing it added stays
	}
	m.devices[n.ID], m.devices[n.ID+"-net"] = true, true
	return nil
}

func (m *DeviceMachine) RemoveNetdev(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("RemoveNetdev %s", id)
	delete(m.devices, id+"-net")
	return nil
}

func (m *DeviceMachine) PlugDisk(ctx context.Context, d machine.Disk) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("PlugDisk %s", d.ID)
	if m.PlugDiskErr != nil {
		return m.PlugDiskErr
	}
	m.devices[d.ID] = true
	return nil
}

func (m *DeviceMachine) CloseImage(ctx context.Context, path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("CloseImage %s", path)
}

func (m *DeviceMachine) Unplug(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("Unplug %s", id)
	if m.UnplugErr != nil {
		return m.UnplugErr
	}
	delete(m.devices, id)
	return nil
}

func (m *DeviceMachine) Memory(ctx context.Context, maxMem uint64) (machine.Memory, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.mem
	mem.Max = maxMem
	return mem, nil
}

func (m *DeviceMachine) SetPlugged(ctx context.Context, size uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("SetPlugged %d", size)
	if m.SetPluggedErr != nil {
		return m.SetPluggedErr
	}
	m.mem.Plugged = size
	return nil
}

func (m *DeviceMachine) SetBalloon(ctx context.Context, bytes uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("SetBalloon %d", bytes)
	m.mem.Balloon = bytes
	return nil
}

func (m *DeviceMachine) BalloonStats(ctx context.Context) (qmp.GuestStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Stats, nil
}

func (m *DeviceMachine) PollBalloonStats(ctx context.Context) error { return nil }

// The rest of a machine does nothing here.

func (m *DeviceMachine) Pid() int                           { return 4242 }
func (m *DeviceMachine) Exited() <-chan struct{}            { return m.exited }
func (m *DeviceMachine) End() (string, bool)                { return "", true }
func (m *DeviceMachine) ExpectExit(bool)                    {}
func (m *DeviceMachine) Kill() error                        { return nil }
func (m *DeviceMachine) Detach()                            {}
func (m *DeviceMachine) Pause(context.Context) error        { return nil }
func (m *DeviceMachine) Cont(context.Context) error         { return nil }
func (m *DeviceMachine) PowerButton(context.Context) error  { return nil }
func (m *DeviceMachine) Quit()                              {}
func (m *DeviceMachine) WaitIncoming(context.Context) error { return nil }
func (m *DeviceMachine) Flush(context.Context) error        { return nil }
func (m *DeviceMachine) CancelSave(context.Context) error   { return nil }
func (m *DeviceMachine) Status(context.Context) (qmp.StatusInfo, error) {
	return qmp.StatusInfo{Status: "running", Running: true}, nil
}
func (m *DeviceMachine) SaveState(context.Context, string, func(done, total uint64)) error {
	return nil
}

// DeviceSession is a fake hostvm.Session around a DeviceMachine (no block
// layer unless Blk is set).
type DeviceSession struct {
	*DeviceMachine
	Blk  hostvm.Block
	gone chan struct{}
}

// NewDeviceSession is a session of m.
func NewDeviceSession(m *DeviceMachine) *DeviceSession {
	return &DeviceSession{DeviceMachine: m, gone: make(chan struct{})}
}

var _ hostvm.Session = (*DeviceSession)(nil)

func (s *DeviceSession) Block() hostvm.Block   { return s.Blk }
func (s *DeviceSession) Gone() <-chan struct{} { return s.gone }

// The devices' tests never migrate: each migration call fails.
var errNoMigration = fmt.Errorf("the device fake does not migrate")

func (m *DeviceMachine) MachineType(context.Context) (string, error) { return "pc-i440fx-7.2", nil }
func (m *DeviceMachine) MirrorDisks(context.Context, machine.Outgoing, func(machine.MigrationProgress)) error {
	return errNoMigration
}
func (m *DeviceMachine) MigrateState(context.Context, machine.Outgoing, func(machine.MigrationProgress)) (machine.MigrationProgress, error) {
	return machine.MigrationProgress{}, errNoMigration
}
func (m *DeviceMachine) AbortOutgoing(context.Context, machine.Outgoing, bool) {}
func (m *DeviceMachine) CloseOutgoing(context.Context, machine.Outgoing)       {}
func (m *DeviceMachine) ListenIncoming(context.Context, machine.Incoming, bool) error {
	return errNoMigration
}
func (m *DeviceMachine) WaitIncomingDone(context.Context) error          { return errNoMigration }
func (m *DeviceMachine) CloseIncoming(context.Context, machine.Incoming) {}
