// Package store keeps the records that define each VM (its configuration)
// and that hvd needs to find it again (its runtime record). Today they are
// files in the VM's directory, next to its disks; a cluster will keep them in
// etcd. The host reads and writes them only through Store, so that no
// feature depends on where they live.
package store

import (
	"github.com/hvproject/hv/internal/vmconfig"
)

// Store reads and writes VM records. A VM is named by its directory (where
// its disks, NVRAM and memory state live, and what identifies it on this
// host); an implementation may keep the records elsewhere. Writes are
// durable and atomic: after a crash a record is the old one or the new one.
type Store interface {
	LoadConfig(dir string) (vmconfig.Config, int, error)
	SaveConfig(dir string, c vmconfig.Config) error
	LoadRuntime(dir string) (vmconfig.Runtime, error)
	SaveRuntime(dir string, r vmconfig.Runtime) error
}

// Files keeps the records as config.json and runtime.json in the VM's directory.
type Files struct{}

var _ Store = Files{}

func (Files) LoadConfig(dir string) (vmconfig.Config, int, error) { return vmconfig.Load(dir) }
func (Files) SaveConfig(dir string, c vmconfig.Config) error      { return vmconfig.Save(dir, c) }
func (Files) LoadRuntime(dir string) (vmconfig.Runtime, error)    { return vmconfig.LoadRuntime(dir) }
func (Files) SaveRuntime(dir string, r vmconfig.Runtime) error    { return vmconfig.SaveRuntime(dir, r) }
