// Package devices is the API of a VM's devices (Hyper-V's VM settings of
// hardware): its NICs and data disks, added and removed live by hot-plug on
// root ports it assigns; its memory, resized live and balanced by the
// dynamic memory balancer; and the host's virtual switches the NICs join.
// It sees VMs only through the host's contract (hostvm). The host calls it
// where a VM's life needs its devices: the NICs' taps around QEMU, the
// balancer while it runs, a live memory change.
package devices

import (
	"context"
	"fmt"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/netdev"
)

// Network is what devices ask of the host's virtual network: its switches
// and the taps that put a NIC on one (a *netdev.Manager, or a fake).
type Network interface {
	Get(name string) (api.Switch, error)
	List() []api.Switch
	Create(ctx context.Context, req api.SwitchCreate) (api.Switch, error)
	Delete(ctx context.Context, name string) error
	CreateTap(ctx context.Context, switchName, tapName, mac string, vlan int, owner string) error
	DeleteTap(ctx context.Context, tapName string) error
}

var _ Network = (*netdev.Manager)(nil)

// Checkpoints tells which disks a VM's checkpoints hold (a disk in one
// cannot be removed).
type Checkpoints interface {
	// Tree reads the VM's checkpoint tree.
	Tree(v hostvm.VM) (*checkpoint.Tree, error)
}

// Service is the devices' API (the httpapi Devices and Switches roles).
type Service struct {
	h   hostvm.Host
	net Network
	cp  Checkpoints
}

// New returns the devices' API of host h, whose NICs join switches of net.
func New(h hostvm.Host, net Network, cp Checkpoints) *Service {
	return &Service{h: h, net: net, cp: cp}
}

// wrap keeps the kind of err (for the HTTP code) while adding context.
func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(a, err)...)
}
