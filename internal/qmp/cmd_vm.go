package qmp

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/hvproject/hv/internal/errdefs"
)

// Typed commands for the machine as a whole: run state, introspection,
// devices, memory, descriptors and QOM objects. Field names and JSON tags
// follow QEMU 7.2's QAPI schema; the tests check them against the schema a
// real QEMU reports. Optional members whose QEMU default is true are *bool,
// so that false can be sent.

// Cont resumes the guest's CPUs ("cont").
type Cont struct{}

func (Cont) Command() string { return "cont" }

// Stop pauses the guest's CPUs ("stop").
type Stop struct{}

func (Stop) Command() string { return "stop" }

// SystemPowerdown presses the ACPI power button ("system_powerdown").
type SystemPowerdown struct{}

func (SystemPowerdown) Command() string { return "system_powerdown" }

// SystemReset resets the machine ("system_reset").
type SystemReset struct{}

func (SystemReset) Command() string { return "system_reset" }

// Quit ends QEMU at once ("quit"); the connection then closes.
type Quit struct{}

func (Quit) Command() string { return "quit" }

// QueryStatus asks for the run state ("query-status").
type QueryStatus struct{}

func (QueryStatus) Command() string     { return "query-status" }
func (QueryStatus) returns(*StatusInfo) {}

// QueryVersion asks for QEMU's version ("query-version").
type QueryVersion struct{}

func (QueryVersion) Command() string      { return "query-version" }
func (QueryVersion) returns(*VersionInfo) {}

// VersionInfo is the answer of query-version.
type VersionInfo struct {
	QEMU struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"qemu"`
	Package string `json:"package"`
}

// QueryMachines lists the machine types this QEMU offers ("query-machines").
type QueryMachines struct{}

func (QueryMachines) Command() string        { return "query-machines" }
func (QueryMachines) returns(*[]MachineInfo) {}

// MachineInfo is one machine type.
type MachineInfo struct {
	Name             string `json:"name"`
	Alias            string `json:"alias,omitempty"`
	IsDefault        bool   `json:"is-default,omitempty"`
	CPUMax           int    `json:"cpu-max"`
	HotpluggableCPUs bool   `json:"hotpluggable-cpus"`
	NUMAMemSupported bool   `json:"numa-mem-supported"`
	Deprecated       bool   `json:"deprecated"`
	DefaultCPUType   string `json:"default-cpu-type,omitempty"`
	DefaultRAMID     string `json:"default-ram-id,omitempty"`
}

// QueryCPUDefinitions lists the CPU models ("query-cpu-definitions"). Before
// a migration, a model the destination lists with unavailable features
// cannot run there.
type QueryCPUDefinitions struct{}

func (QueryCPUDefinitions) Command() string          { return "query-cpu-definitions" }
func (QueryCPUDefinitions) returns(*[]CPUDefinition) {}

// CPUDefinition is one CPU model.
type CPUDefinition struct {
	Name          string `json:"name"`
	MigrationSafe bool   `json:"migration-safe,omitempty"`
	Static        bool   `json:"static"`
	// UnavailableFeatures is what keeps the model from running on this host
	// with this accelerator; nil when QEMU cannot tell.
	UnavailableFeatures []string `json:"unavailable-features,omitempty"`
	Typename            string   `json:"typename"`
	AliasOf             string   `json:"alias-of,omitempty"`
	Deprecated          bool     `json:"deprecated"`
}

// CPUModel is a CPU model with property overrides ("CpuModelInfo").
type CPUModel struct {
	Name string `json:"name"`
	// Props holds feature flags (bool) and other properties (numbers,
	// strings) as QEMU reports them.
	Props map[string]any `json:"props,omitempty"`
}

// QueryCPUModelExpansion expands a CPU model into every property it sets
// ("query-cpu-model-expansion"): comparing the expansions of two hosts
// shows whether a guest can move between them.
type QueryCPUModelExpansion struct {
	Type  string   `json:"type"` // "static" or "full"
	Model CPUModel `json:"model"`
}

func (QueryCPUModelExpansion) Command() string            { return "query-cpu-model-expansion" }
func (QueryCPUModelExpansion) returns(*CPUModelExpansion) {}

// CPUModelExpansion is the answer of query-cpu-model-expansion.
type CPUModelExpansion struct {
	Model CPUModel `json:"model"`
}

// QomSet sets a QOM property ("qom-set"), such as a virtio-mem device's
// requested-size or the balloon's guest-stats-polling-interval.
type QomSet struct {
	Path     string `json:"path"`
	Property string `json:"property"`
	Value    any    `json:"value"`
}

func (QomSet) Command() string { return "qom-set" }

// QomGet reads a QOM property ("qom-get") as a T: uint64 for a size,
// GuestStats for the balloon's guest-stats, and so on.
type QomGet[T any] struct {
	Path     string `json:"path"`
	Property string `json:"property"`
}

func (QomGet[T]) Command() string { return "qom-get" }
func (QomGet[T]) returns(*T)      {}

// GuestStats is the balloon device's "guest-stats" property. QEMU reports a
// statistic the guest has not sent as 2^64-1.
type GuestStats struct {
	Stats      map[string]uint64 `json:"stats"`
	LastUpdate int64             `json:"last-update"` // Unix seconds; 0 before the first report
}

// Balloon asks the guest to shrink or grow its balloon so that it keeps
// Value bytes ("balloon").
type Balloon struct {
	Value uint64 `json:"value"`
}

func (Balloon) Command() string { return "balloon" }

// QueryBalloon asks what the balloon leaves the guest ("query-balloon").
type QueryBalloon struct{}

func (QueryBalloon) Command() string      { return "query-balloon" }
func (QueryBalloon) returns(*BalloonInfo) {}

// BalloonInfo is the answer of query-balloon.
type BalloonInfo struct {
	Actual uint64 `json:"actual"` // bytes
}

// QueryMemorySizeSummary asks for boot and hot-plugged memory
// ("query-memory-size-summary").
type QueryMemorySizeSummary struct{}

func (QueryMemorySizeSummary) Command() string            { return "query-memory-size-summary" }
func (QueryMemorySizeSummary) returns(*MemorySizeSummary) {}

// MemorySizeSummary is the answer of query-memory-size-summary.
type MemorySizeSummary struct {
	BaseMemory    uint64 `json:"base-memory"`
	PluggedMemory uint64 `json:"plugged-memory,omitempty"`
}

// DeviceAdd plugs in a device ("device_add"). QEMU takes any property of the
// driver here; the ones hv uses are fields, others go in Props.
type DeviceAdd struct {
	Driver string `json:"driver"` // "virtio-blk-pci", "virtio-net-pci", ...
	ID     string `json:"id,omitempty"`
	Bus    string `json:"bus,omitempty"`
	// Drive is a block device's format node.
	Drive string `json:"drive,omitempty"`
	// Netdev is a NIC's backend (NetdevAdd's ID); MAC its address.
	Netdev    string `json:"netdev,omitempty"`
	MAC       string `json:"mac,omitempty"`
	BootIndex *int   `json:"bootindex,omitempty"`
	// Props are further properties of the driver. One that repeats a field
	// above is an error rather than a silent choice between the two.
	Props map[string]any `json:"-"`
}

func (DeviceAdd) Command() string { return "device_add" }

func (d DeviceAdd) MarshalJSON() ([]byte, error) {
	type plain DeviceAdd
	b, err := json.Marshal(plain(d))
	if err != nil || len(d.Props) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range d.Props {
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("device %q: property %q is set both as a field and in Props; set it once: %w", d.ID, k, errdefs.ErrInvalid)
		}
		if m[k], err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("device %q: property %q: %w: %w", d.ID, k, errdefs.ErrInvalid, err)
		}
	}
	return json.Marshal(m)
}

// DeviceDel asks the guest to release a device ("device_del"); it is gone
// when DEVICE_DELETED arrives.
type DeviceDel struct {
	ID string `json:"id"`
}

func (DeviceDel) Command() string { return "device_del" }

// NetdevOptions is a network backend for NetdevAdd: TapNetdev.
type NetdevOptions interface {
	netdevType() string
}

// NetdevAdd creates a network backend ("netdev_add").
type NetdevAdd struct {
	Netdev NetdevOptions
}

func (NetdevAdd) Command() string { return "netdev_add" }

func (n NetdevAdd) MarshalJSON() ([]byte, error) {
	if n.Netdev == nil {
		return nil, fmt.Errorf("netdev_add without a backend; set Netdev: %w", errdefs.ErrInvalid)
	}
	return json.Marshal(n.Netdev)
}

// TapNetdev is a tap backend ("type": "tap").
type TapNetdev struct {
	ID     string `json:"id"`
	Ifname string `json:"ifname,omitempty"`
	// FD names a descriptor passed with GetFD, instead of Ifname.
	FD string `json:"fd,omitempty"`
	// Script and Downscript are "no" for a tap hv creates itself; QEMU's
	// default runs /etc/qemu-ifup.
	Script     string `json:"script,omitempty"`
	Downscript string `json:"downscript,omitempty"`
	VNetHdr    *bool  `json:"vnet_hdr,omitempty"`
	Vhost      bool   `json:"vhost,omitempty"`
	Queues     int    `json:"queues,omitempty"`
}

func (TapNetdev) netdevType() string { return "tap" }

func (t TapNetdev) MarshalJSON() ([]byte, error) {
	type plain TapNetdev
	return withTag("type", "tap", plain(t))
}

// NetdevDel removes a network backend ("netdev_del").
type NetdevDel struct {
	ID string `json:"id"`
}

func (NetdevDel) Command() string { return "netdev_del" }

// GetFD hands QEMU a descriptor under a name ("getfd"), for "fd:NAME"
// migration URIs and tap fds. Do sends File with the command; the caller
// keeps its own copy and closes it.
type GetFD struct {
	Name string   `json:"fdname"`
	File *os.File `json:"-"`
}

func (GetFD) Command() string  { return "getfd" }
func (g GetFD) file() *os.File { return g.File }

// CloseFD closes a descriptor passed with GetFD that QEMU did not consume
// ("closefd").
type CloseFD struct {
	Name string `json:"fdname"`
}

func (CloseFD) Command() string { return "closefd" }

// ObjectOptions is a QOM object for ObjectAdd: TLSCredsX509.
type ObjectOptions interface {
	qomType() string
}

// ObjectAdd creates a QOM object ("object-add").
type ObjectAdd struct {
	Object ObjectOptions
}

func (ObjectAdd) Command() string { return "object-add" }

func (o ObjectAdd) MarshalJSON() ([]byte, error) {
	if o.Object == nil {
		return nil, fmt.Errorf("object-add without an object; set Object: %w", errdefs.ErrInvalid)
	}
	return json.Marshal(o.Object)
}

// TLSCredsX509 is a set of x509 credentials in a directory
// ("qom-type": "tls-creds-x509"): ca-cert.pem, and server-cert.pem and
// server-key.pem (endpoint "server") or client-cert.pem and client-key.pem
// (endpoint "client"). QEMU reads the files when the object is created.
// Migration and NBD name it in their tls-creds.
type TLSCredsX509 struct {
	ID       string `json:"id"`
	Dir      string `json:"dir,omitempty"`
	Endpoint string `json:"endpoint,omitempty"` // "client" (QEMU's default) or "server"
	// VerifyPeer defaults to true: a server then asks for the client's
	// certificate, a client checks the server's.
	VerifyPeer *bool  `json:"verify-peer,omitempty"`
	Priority   string `json:"priority,omitempty"` // a GnuTLS priority string
	// SanityCheck defaults to true: QEMU checks the certificates' usage
	// and dates when it loads them.
	SanityCheck *bool `json:"sanity-check,omitempty"`
}

func (TLSCredsX509) qomType() string { return "tls-creds-x509" }

func (c TLSCredsX509) MarshalJSON() ([]byte, error) {
	type plain TLSCredsX509
	return withTag("qom-type", "tls-creds-x509", plain(c))
}

// ObjectDel removes a QOM object ("object-del").
type ObjectDel struct {
	ID string `json:"id"`
}

func (ObjectDel) Command() string { return "object-del" }
