package host

import (
	"context"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/feature/devices"
	"github.com/hvproject/hv/internal/feature/images"
	"github.com/hvproject/hv/internal/feature/integration"
	"github.com/hvproject/hv/internal/feature/transfer"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/qemu"
	"github.com/hvproject/hv/internal/vmconfig"
)

// The features built on the host (internal/feature/...), each seeing VMs
// through hostvm, and what the host itself asks of them.

// vmDevices is what a VM's life asks of its devices: the taps of its NICs
// around its QEMU, the memory balancer while it runs, a live memory change
// (devices.Service, or a fake in tests).
type vmDevices interface {
	StartNICs(ctx context.Context, cfg vmconfig.Config) ([]qemu.NICSpec, error)
	StopNICs(cfg vmconfig.Config)
	Balance(ctx context.Context, v hostvm.VM, m hostvm.Machine)
	ResizeMemory(ctx context.Context, v hostvm.VM, want string) error
}

// newFeatures makes the features of the host, once its network is up.
func (s *Service) newFeatures() {
	cp := checkpoints{s}
	s.transfers = transfer.New(s, cp)
	s.guestAPI = integration.New(s)
	s.devices = devices.New(s, s.net, cp)
	s.devs = s.devices
	s.images = images.New(s)
}

// Transfers is the export and import API (the httpapi Transfers role).
func (s *Service) Transfers() *transfer.Service { return s.transfers }

// Guest is the integration services' API (the httpapi Guest role).
func (s *Service) Guest() *integration.Service { return s.guestAPI }

// Devices is the devices' API (the httpapi Devices and Switches roles).
func (s *Service) Devices() *devices.Service { return s.devices }

// Images is the disk tools' API (the httpapi Disks role).
func (s *Service) Images() *images.Service { return s.images }

// checkpoints is the host's checkpoint service as the features see it
// (transfer.Checkpoints, devices.Checkpoints).
type checkpoints struct{ s *Service }

var (
	_ transfer.Checkpoints = checkpoints{}
	_ devices.Checkpoints  = checkpoints{}
)

func (c checkpoints) Tree(v hostvm.VM) (*checkpoint.Tree, error) { return c.s.loadTree(v.(*vm)) }

func (c checkpoints) TakeTemporary(ctx context.Context, op *operation.Op, v hostvm.VM, name string) (string, error) {
	cp, err := c.s.createCheckpoint(ctx, op, v.(*vm), checkpointRequest{name: name, typ: api.CheckpointProduction, noMemory: true})
	return cp.ID, err
}

func (c checkpoints) Delete(ctx context.Context, op *operation.Op, v hostvm.VM, id string) error {
	return c.s.deleteCheckpoint(ctx, op, v.(*vm), id, false)
}
