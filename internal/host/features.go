package host

import (
	"context"
	"path/filepath"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/feature/backup"
	"github.com/hvproject/hv/internal/feature/checkpoints"
	"github.com/hvproject/hv/internal/feature/devices"
	"github.com/hvproject/hv/internal/feature/images"
	"github.com/hvproject/hv/internal/feature/integration"
	"github.com/hvproject/hv/internal/feature/migration"
	"github.com/hvproject/hv/internal/feature/resiliency"
	"github.com/hvproject/hv/internal/feature/storage"
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
func (s *Service) newFeatures(o Options) {
	s.backups = backup.New(s)
	s.ckpts = checkpoints.New(s)
	cp := featureCheckpoints{s.ckpts}
	s.transfers = transfer.New(s, cp)
	s.guestAPI = integration.New(s)
	s.devices = devices.New(s, s.net, cp)
	s.devs = s.devices
	s.images = images.New(s)
	s.storage = storage.New(s)
	s.resilience = resiliency.New(s, o.CriticalRetry, s.stop)
	var peers migration.Peers = noPeers{}
	if o.Peers != nil {
		peers = o.Peers
	}
	s.moves = migration.NewSource(s, peers)
	s.incoming = migration.NewTarget(s, o.ListenHost, filepath.Join(s.root, "migrations"))
}

// Transfers is the export and import API (the httpapi Transfers role).
func (s *Service) Transfers() *transfer.Service { return s.transfers }

// Guest is the integration services' API (the httpapi Guest role).
func (s *Service) Guest() *integration.Service { return s.guestAPI }

// Devices is the devices' API (the httpapi Devices and Switches roles).
func (s *Service) Devices() *devices.Service { return s.devices }

// Images is the disk tools' API (the httpapi Disks role).
func (s *Service) Images() *images.Service { return s.images }

// featureCheckpoints is the checkpoint feature as the other features see it
// (transfer.Checkpoints, devices.Checkpoints).
type featureCheckpoints struct{ c *checkpoints.Service }

var (
	_ transfer.Checkpoints = featureCheckpoints{}
	_ devices.Checkpoints  = featureCheckpoints{}
)

func (f featureCheckpoints) Tree(v hostvm.VM) (*checkpoint.Tree, error) {
	return checkpoints.LoadTree(v)
}

func (f featureCheckpoints) TakeTemporary(ctx context.Context, op *operation.Op, v hostvm.VM, name string) (string, error) {
	cp, err := f.c.Create(ctx, op, v, checkpoints.Request{Name: name, Type: api.CheckpointProduction, NoMemory: true})
	return cp.ID, err
}

func (f featureCheckpoints) Delete(ctx context.Context, op *operation.Op, v hostvm.VM, id string) error {
	return f.c.Delete(ctx, op, v, id, false)
}
