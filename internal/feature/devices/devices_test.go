package devices

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/netdev"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// fakeNet is a virtual network of switches and taps.
type fakeNet struct {
	mu       sync.Mutex
	switches map[string]api.Switch
	taps     map[string]string // tap → switch
	failTap  string            // CreateTap of this tap fails
}

func newFakeNet(switches ...string) *fakeNet {
	n := &fakeNet{switches: map[string]api.Switch{}, taps: map[string]string{}}
	for _, s := range switches {
		n.switches[s] = api.Switch{Name: s, Type: "internal"}
	}
	return n
}

func (n *fakeNet) Get(name string) (api.Switch, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.switches[name]; ok {
		return s, nil
	}
	return api.Switch{}, fmt.Errorf("switch %q: %w", name, errdefs.ErrNotFound)
}

func (n *fakeNet) List() []api.Switch {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []api.Switch
	for _, s := range n.switches {
		out = append(out, s)
	}
	return out
}

func (n *fakeNet) Create(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.switches[req.Name] = api.Switch{Name: req.Name, Type: req.Type}
	return n.switches[req.Name], nil
}

func (n *fakeNet) Delete(ctx context.Context, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.switches, name)
	return nil
}

func (n *fakeNet) CreateTap(ctx context.Context, sw, tap, mac string, vlan int, owner string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if tap == n.failTap {
		return fmt.Errorf("creating tap %s: %w", tap, errdefs.ErrUnavailable)
	}
	n.taps[tap] = sw
	return nil
}

func (n *fakeNet) DeleteTap(ctx context.Context, tap string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.taps, tap)
	return nil
}

// Taps lists the taps that exist, sorted.
func (n *fakeNet) Taps() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for t := range n.taps {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// fakeTree holds the checkpoint trees by VM directory.
type fakeTree map[string]*checkpoint.Tree

func (f fakeTree) Tree(v hostvm.VM) (*checkpoint.Tree, error) {
	if t := f[v.Dir()]; t != nil {
		return t, nil
	}
	return &checkpoint.Tree{}, nil
}

// newVM is generation 2 VM name with a boot disk, in state; running, it has
// a machine with 4 hot-plug ports and 1G of boot memory, 3G more to add.
func newVM(t *testing.T, name, state string) (*hostvmtest.VM, *hostvmtest.DeviceMachine) {
	t.Helper()
	cfg := vmconfig.Config{Name: name, ID: vmconfig.NewID(), Generation: 2, CPUs: 1,
		MemoryBytes: 1 << 30, MaxMemoryBytes: 4 << 30, CreatedAt: time.Now().UTC(), NVRAM: "nvram.fd",
		Disks: []vmconfig.Disk{{Name: "root", File: "root.qcow2", Format: "qcow2", Boot: true}}}
	v, err := hostvmtest.NewVM(t.TempDir(), cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	if state != api.StateRunning {
		return v, nil
	}
	m := hostvmtest.NewDeviceMachine(machine.Memory{Boot: 1 << 30, Balloon: 1 << 30})
	v.Sess = hostvmtest.NewDeviceSession(m)
	if err := v.UpdateRuntime(func(rt *vmconfig.Runtime) {
		rt.HotplugPorts, rt.BootMemoryBytes, rt.MaxMemoryBytes = 4, 1<<30, 4<<30
	}); err != nil {
		t.Fatal(err)
	}
	return v, m
}

func newDevices(t *testing.T, vms ...*hostvmtest.VM) (*Service, *fakeNet, fakeTree) {
	t.Helper()
	h := hostvmtest.NewHost(vms...)
	if tool, err := disk.NewTool(); err == nil {
		h.Tool = tool
	}
	n, trees := newFakeNet("lan"), fakeTree{}
	return New(h, n, trees), n, trees
}

// run(t)(op, err) runs an operation to its end and returns its error (err
// when it did not start).
func run(t *testing.T) func(op *operation.Op, err error) error {
	return func(op *operation.Op, err error) error {
		t.Helper()
		if err != nil {
			return err
		}
		select {
		case <-op.Done():
		case <-time.After(time.Minute):
			t.Fatal("the operation did not finish")
		}
		if snap := op.Snapshot(); snap.Status != api.OpSuccess {
			return errors.New(snap.Error)
		}
		return nil
	}
}

func setNICs(t *testing.T, v *hostvmtest.VM, nics ...vmconfig.NIC) {
	t.Helper()
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error { c.NICs = nics; return nil }); err != nil {
		t.Fatal(err)
	}
}

func nicNames(v *hostvmtest.VM) []string {
	var out []string
	for _, n := range v.Config().NICs {
		out = append(out, n.Name)
	}
	return out
}

// A NIC plugged into a running VM gets a tap on its switch, a free root
// port and a device in QEMU, and is recorded.
func TestAddNICLive(t *testing.T) {
	v, m := newVM(t, "web", api.StateRunning)
	f, n, _ := newDevices(t, v)
	if err := run(t)(f.AddNIC("web", api.NICAdd{Switch: "lan"})); err != nil {
		t.Fatal(err)
	}
	nics := v.Config().NICs
	if len(nics) != 1 || nics[0].Name != "eth0" || nics[0].Bus != "hp0" || nics[0].MAC == "" {
		t.Fatalf("recorded NICs: %+v", nics)
	}
	if taps := n.Taps(); len(taps) != 1 || taps[0] != netdev.TapName(v.ID(), "eth0") {
		t.Fatalf("taps: %v", taps)
	}
	if got := strings.Join(m.Devices(), " "); got != "nic-eth0 nic-eth0-net" {
		t.Fatalf("QEMU has %q", got)
	}
	if err := run(t)(f.RemoveNIC("web", "eth0")); err != nil {
		t.Fatal(err)
	}
	if len(v.Config().NICs) != 0 || len(n.Taps()) != 0 || len(m.Devices()) != 0 {
		t.Fatalf("after removal: NICs %v, taps %v, QEMU %v", nicNames(v), n.Taps(), m.Devices())
	}
}

// A hot-plug that fails, in QEMU or when it is recorded, is undone: the
// configuration is unchanged, and neither the device, its netdev nor its
// tap stays behind.
func TestAddNICFailureIsUndone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine)
		calls  string
	}{
		{"plug", func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine) {
			m.PlugNICErr = fmt.Errorf("device_add: %w", errdefs.ErrUnavailable)
		}, "PlugNIC nic-eth0"},
		{"record", func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine) {
			v.UpdateErr = fmt.Errorf("disk full: %w", errdefs.ErrUnavailable)
		}, "PlugNIC nic-eth0 Unplug nic-eth0 RemoveNetdev nic-eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, m := newVM(t, "web", api.StateRunning)
			f, n, _ := newDevices(t, v)
			before := v.Config()
			tc.break_(v, m)
			if err := run(t)(f.AddNIC("web", api.NICAdd{Switch: "lan"})); err == nil {
				t.Fatal("the NIC was added")
			}
			if after := v.Config(); len(after.NICs) != len(before.NICs) {
				t.Fatalf("the configuration changed: %v", nicNames(v))
			}
			if got, _, _ := vmconfig.Load(v.Dir()); len(got.NICs) != 0 {
				t.Fatalf("the configuration on disk changed: %+v", got.NICs)
			}
			if taps := n.Taps(); len(taps) > 0 {
				t.Fatalf("taps left: %v", taps)
			}
			if d := m.Devices(); len(d) > 0 {
				t.Fatalf("QEMU still has %v", d)
			}
			if got := strings.Join(m.Calls(), " "); got != tc.calls {
				t.Fatalf("QEMU was asked %q, want %q", got, tc.calls)
			}
		})
	}
}

// A NIC added to a VM that is off is only recorded.
func TestAddNICOff(t *testing.T) {
	v, _ := newVM(t, "web", api.StateOff)
	f, n, _ := newDevices(t, v)
	if err := run(t)(f.AddNIC("web", api.NICAdd{Switch: "lan", Name: "lan0", MAC: "52:54:00:AA:BB:CC", VLAN: 7})); err != nil {
		t.Fatal(err)
	}
	nics := v.Config().NICs
	if len(nics) != 1 || nics[0].MAC != "52:54:00:aa:bb:cc" || nics[0].VLAN != 7 || nics[0].Bus != "" || len(n.Taps()) != 0 {
		t.Fatalf("NICs %+v, taps %v", nics, n.Taps())
	}
}

// A bad NIC request is refused at once, naming the field.
func TestPlanNICRefuses(t *testing.T) {
	v, _ := newVM(t, "web", api.StateOff)
	other, _ := newVM(t, "db", api.StateOff)
	setNICs(t, other, vmconfig.NIC{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:01"})
	setNICs(t, v, vmconfig.NIC{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:02"})
	f, _, _ := newDevices(t, v, other)
	for _, c := range []struct {
		req  api.NICAdd
		kind error
		want string
	}{
		{api.NICAdd{Switch: "wan"}, errdefs.ErrNotFound, "switch:"},
		{api.NICAdd{Switch: "lan", VLAN: 4095}, errdefs.ErrInvalid, "vlan:"},
		{api.NICAdd{Switch: "lan", Name: "Eth-1"}, errdefs.ErrInvalid, "name:"},
		{api.NICAdd{Switch: "lan", Name: "eth0"}, errdefs.ErrConflict, "name:"},
		{api.NICAdd{Switch: "lan", MAC: "52:54:00:00:00:01"}, errdefs.ErrConflict, "mac: 52:54:00:00:00:01 belongs to db/eth0"},
		{api.NICAdd{Switch: "lan", MAC: "zz"}, errdefs.ErrInvalid, "mac: \"zz\""},
	} {
		if _, err := f.AddNIC("web", c.req); !errors.Is(err, c.kind) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %v starting %q", c.req, err, c.kind, c.want)
		}
	}
	if nic, err := f.planNIC(v, api.NICAdd{Switch: "lan"}); err != nil || nic.Name != "eth1" {
		t.Errorf("the next free name: %+v %v", nic, err)
	}
}

// The taps of a start are made for every NIC; if one cannot be, none stays.
func TestStartNICs(t *testing.T) {
	v, _ := newVM(t, "web", api.StateOff)
	f, n, _ := newDevices(t, v)
	cfg := v.Config()
	cfg.NICs = []vmconfig.NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:01", Bus: "hp0"}, {Name: "eth1", Switch: "lan", MAC: "52:54:00:00:00:02", Bus: "hp1"}}
	specs, err := f.StartNICs(context.Background(), cfg)
	if err != nil || len(specs) != 2 || specs[1].ID != "nic-eth1" || specs[1].Bus != "hp1" || len(n.Taps()) != 2 {
		t.Fatalf("specs %+v, taps %v: %v", specs, n.Taps(), err)
	}
	f.StopNICs(cfg)
	if len(n.Taps()) != 0 {
		t.Fatalf("taps after stop: %v", n.Taps())
	}
	n.failTap = netdev.TapName(cfg.ID, "eth1")
	if _, err := f.StartNICs(context.Background(), cfg); err == nil || !strings.HasPrefix(err.Error(), "NIC eth1: ") {
		t.Fatalf("a tap that cannot be made: %v", err)
	}
	if len(n.Taps()) != 0 {
		t.Fatalf("a failed start left taps: %v", n.Taps())
	}
}

// A switch that a NIC names stays, whether its VM runs or not.
func TestDeleteSwitchInUse(t *testing.T) {
	v, _ := newVM(t, "web", api.StateOff)
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.NICs = []vmconfig.NIC{{Name: "eth0", Switch: "lan", MAC: "52:54:00:00:00:01"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f, n, _ := newDevices(t, v)
	ctx := context.Background()
	if err := f.DeleteSwitch(ctx, "lan"); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "web/eth0") {
		t.Fatalf("deleting a switch in use: %v", err)
	}
	if _, err := f.CreateSwitch(ctx, api.SwitchCreate{Name: "dmz", Type: "private"}); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteSwitch(ctx, "dmz"); err != nil || len(f.ListSwitches()) != 1 {
		t.Fatalf("deleting a free switch: %v (left %v)", err, n.List())
	}
}

func TestAssignAndFreeBuses(t *testing.T) {
	c := vmconfig.Config{Generation: 2,
		NICs:  []vmconfig.NIC{{Name: "a"}, {Name: "b", Bus: "hp0"}},
		Disks: []vmconfig.Disk{{Name: "root", Boot: true}, {Name: "data"}}}
	if ports := AssignBuses(&c); ports != 3+spareHotplugPorts {
		t.Fatalf("ports %d", ports)
	}
	if c.NICs[0].Bus != "hp1" || c.NICs[1].Bus != "hp0" || c.Disks[0].Bus != "" || c.Disks[1].Bus != "hp2" {
		t.Fatalf("buses: %+v %+v", c.NICs, c.Disks)
	}
	if bus, err := freeBus(c, 4); err != nil || bus != "hp3" {
		t.Fatalf("free bus: %q %v", bus, err)
	}
	if _, err := freeBus(c, 3); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("no free bus: %v", err)
	}
	if bus, err := freeBus(vmconfig.Config{Generation: 1}, 0); err != nil || bus != "" {
		t.Fatalf("generation 1: %q %v", bus, err)
	}
	if AssignBuses(&vmconfig.Config{Generation: 1, NICs: []vmconfig.NIC{{Name: "a"}}}) != 0 {
		t.Fatal("generation 1 got ports")
	}
}

// A disk plugged into a running VM is made, plugged and recorded; a failure
// at any step leaves the configuration as it was and no image behind.
func TestAddDiskLive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine)
		calls  string
	}{
		{"ok", func(*hostvmtest.VM, *hostvmtest.DeviceMachine) {}, "PlugDisk data1"},
		{"plug", func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine) {
			m.PlugDiskErr = fmt.Errorf("blockdev-add: %w", errdefs.ErrUnavailable)
		}, "PlugDisk data1"},
		{"record", func(v *hostvmtest.VM, m *hostvmtest.DeviceMachine) {
			v.UpdateErr = fmt.Errorf("disk full: %w", errdefs.ErrUnavailable)
		}, "PlugDisk data1 Unplug data1 CloseImage "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, m := newVM(t, "web", api.StateRunning)
			f, _, _ := newDevices(t, v)
			if f.h.Disk() == nil {
				t.Skip("no qemu-img")
			}
			tc.break_(v, m)
			err := run(t)(f.AddDisk(context.Background(), "web", api.DiskAdd{Size: "1M"}))
			_, statErr := os.Stat(v.Path("data1.qcow2"))
			disks := v.Config().Disks
			calls := strings.Join(m.Calls(), " ")
			if tc.name == "record" {
				calls = strings.TrimSuffix(calls, v.Path("data1.qcow2"))
			}
			if calls != tc.calls {
				t.Fatalf("QEMU was asked %q, want %q", calls, tc.calls)
			}
			if tc.name == "ok" {
				if err != nil || statErr != nil || len(disks) != 2 || disks[1].Bus != "hp0" || disks[1].File != "data1.qcow2" {
					t.Fatalf("added: %v, image %v, disks %+v", err, statErr, disks)
				}
				return
			}
			if err == nil || !os.IsNotExist(statErr) || len(disks) != 1 || len(m.Devices()) != 0 {
				t.Fatalf("failed add: %v; image %v; disks %+v; QEMU %v", err, statErr, disks, m.Devices())
			}
		})
	}
}

// Disks are checked before anything is made; the boot disk and a disk in
// the checkpoints cannot be removed.
func TestDiskRequestsRefused(t *testing.T) {
	v, _ := newVM(t, "web", api.StateOff)
	if _, err := v.UpdateConfig(func(c *vmconfig.Config) error {
		c.Disks = append(c.Disks, vmconfig.Disk{Name: "data1", File: "data1.qcow2", Format: "qcow2"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f, _, trees := newDevices(t, v)
	ctx := context.Background()
	for _, c := range []struct {
		req  api.DiskAdd
		kind error
		want string
	}{
		{api.DiskAdd{}, errdefs.ErrInvalid, "path:"},
		{api.DiskAdd{Size: "1G", Path: "/x"}, errdefs.ErrInvalid, "path:"},
		{api.DiskAdd{Size: "10K"}, errdefs.ErrInvalid, "size:"},
		{api.DiskAdd{Path: "rel.qcow2"}, errdefs.ErrInvalid, "path:"},
		{api.DiskAdd{Size: "1G", Name: "data1"}, errdefs.ErrConflict, "name:"},
	} {
		if _, err := f.AddDisk(ctx, "web", c.req); !errors.Is(err, c.kind) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %v starting %q", c.req, err, c.kind, c.want)
		}
	}
	if _, err := f.RemoveDisk("web", "root"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("removing the boot disk: %v", err)
	}
	if _, err := f.RemoveDisk("web", "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("removing a disk the VM lacks: %v", err)
	}
	trees[v.Dir()] = &checkpoint.Tree{Active: map[string]string{"data1": "data1-2.qcow2"}}
	if _, err := f.RemoveDisk("web", "data1"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("removing a disk in the checkpoints: %v", err)
	}
	delete(trees, v.Dir())
	if err := run(t)(f.RemoveDisk("web", "data1")); err != nil || len(v.Config().Disks) != 1 {
		t.Errorf("removing a data disk: %v, disks %+v", err, v.Config().Disks)
	}
}
