// Package vmconfig reads and writes a VM's configuration file (hv's VMCX): versioned,
// checksummed and replaced atomically, so a crash never leaves a half-written VM.
package vmconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/sealed"
)

// CurrentVersion is the configuration version this hv writes. Bump it, and add a
// step to migrations, whenever the meaning of a stored field changes.
const CurrentVersion = 2

// FileName is the configuration file inside a VM's directory.
const FileName = "config.json"

// migrations turn the "vm" object of version N into version N+1. Ordered, one step
// per version, so that any supported older file can be brought up to date.
var migrations = map[int]func(map[string]any) error{
	// 1 → 2: memory hot-add arrived. A VM made before it gets no hot-add range
	// (max = memory), so it starts exactly as it did; the admin raises the ceiling
	// with 'hv vm set --max-memory' when the VM is off, as Hyper-V asks for
	// Update-VMVersion before new features apply.
	1: func(vm map[string]any) error {
		if _, ok := vm["max_memory_bytes"]; !ok {
			vm["max_memory_bytes"] = vm["memory_bytes"]
		}
		return nil
	},
}

// SupportedVersions lists every configuration version this hv reads.
func SupportedVersions() []int {
	out := []int{CurrentVersion}
	for v := CurrentVersion - 1; v >= 1; v-- {
		if _, ok := migrations[v]; !ok {
			break
		}
		out = append([]int{v}, out...)
	}
	return out
}

// Disk is one disk of a VM; File is relative to the VM's directory.
type Disk struct {
	Name   string `json:"name"`
	File   string `json:"file"`
	Format string `json:"format"`
	Boot   bool   `json:"boot,omitempty"`
	Bus    string `json:"bus,omitempty"` // hot-plug port it sits on (generation 2 data disks)
}

// NIC is one network adapter; its MAC is chosen at creation and kept for life.
type NIC struct {
	Name   string `json:"name"`
	Switch string `json:"switch"`
	MAC    string `json:"mac"`
	VLAN   int    `json:"vlan,omitempty"`
	Bus    string `json:"bus,omitempty"`
}

// DynamicMemory is Hyper-V's dynamic memory setting.
type DynamicMemory struct {
	Enabled       bool   `json:"enabled"`
	MinimumBytes  uint64 `json:"minimum_bytes"`
	MaximumBytes  uint64 `json:"maximum_bytes"`
	BufferPercent int    `json:"buffer_percent"`
}

// Config is what defines a VM. Runtime facts (state, pid) live in Runtime.
type Config struct {
	Name        string    `json:"name"`
	ID          string    `json:"id"`
	Generation  int       `json:"generation"`
	SecureBoot  bool      `json:"secure_boot,omitempty"`
	CPUs        int       `json:"cpus"`
	MemoryBytes uint64    `json:"memory_bytes"`
	Disks       []Disk    `json:"disks"`
	Kernel      string    `json:"kernel,omitempty"` // relative to the VM's directory
	Initrd      string    `json:"initrd,omitempty"`
	Cmdline     string    `json:"cmdline,omitempty"`
	NVRAM       string    `json:"nvram,omitempty"` // Gen 2: the VM's UEFI variable store
	CreatedAt   time.Time `json:"created_at"`

	// Since version 2.
	MaxMemoryBytes uint64         `json:"max_memory_bytes"`
	DynamicMemory  *DynamicMemory `json:"dynamic_memory,omitempty"`
	Nested         bool           `json:"nested,omitempty"`
	// CPUCompat starts the VM on a generic CPU model (qemu.CPUModelCompat)
	// that every host runs, so that it moves live between unlike hosts.
	CPUCompat        bool              `json:"cpu_compat,omitempty"`
	NICs             []NIC             `json:"nics,omitempty"`
	KVP              map[string]string `json:"kvp,omitempty"`
	DisabledServices []string          `json:"disabled_services,omitempty"`
	// CheckpointType is the type a checkpoint takes when none is named;
	// "" means production.
	CheckpointType string `json:"checkpoint_type,omitempty"`
	// CriticalErrorAction is what a host I/O error on a disk does: "" or
	// "pause" (the VM waits PausedCritical for its storage), "none" (the
	// guest gets the error).
	CriticalErrorAction string `json:"critical_error_action,omitempty"`
	// CriticalErrorTimeoutSeconds turns off a VM that stayed PausedCritical
	// this long; nil: api.DefaultCriticalErrorTimeoutSeconds, 0: never.
	CriticalErrorTimeoutSeconds *int64 `json:"critical_error_timeout_seconds,omitempty"`
}

// PausesOnIOError says whether a host I/O error pauses the VM
// (PausedCritical) rather than reaching the guest.
func (c *Config) PausesOnIOError() bool { return c.CriticalErrorAction != "none" }

// CriticalTimeout is how long the VM may stay PausedCritical before hv
// turns it off; 0 means never.
func (c *Config) CriticalTimeout() time.Duration {
	if c.CriticalErrorTimeoutSeconds == nil {
		return time.Duration(api.DefaultCriticalErrorTimeoutSeconds) * time.Second
	}
	return time.Duration(*c.CriticalErrorTimeoutSeconds) * time.Second
}

// ServiceEnabled reports whether an integration service is on (all are by default).
func (c *Config) ServiceEnabled(name string) bool {
	for _, s := range c.DisabledServices {
		if s == name {
			return false
		}
	}
	return true
}

// format is config.json's envelope: {"config_version": N, "checksum": ..., "vm": {...}}.
var format = sealed.Format{VersionKey: "config_version", BodyKey: "vm", Version: CurrentVersion}

// Save checks c and writes it into dir atomically and durably.
func Save(dir string, c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s: not saved: %w", filepath.Join(dir, FileName), err)
	}
	return format.Write(filepath.Join(dir, FileName), c)
}

// Load reads the configuration in dir, checks its checksum and brings an older
// version up to date. The version read is returned too.
func Load(dir string) (Config, int, error) {
	path := filepath.Join(dir, FileName)
	data, err := fsutil.ReadFileNoFollow(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Config{}, 0, fmt.Errorf("%s: %w", path, errdefs.ErrNotFound)
		}
		return Config{}, 0, err
	}
	return Parse(path, data)
}

// Parse decodes a configuration file's bytes and checks every field
// (Validate); path is only used in messages.
func Parse(path string, data []byte) (Config, int, error) {
	version, raw, err := format.Open(path, data)
	if err != nil {
		return Config{}, version, err
	}
	supported := SupportedVersions()
	if version < supported[0] {
		return Config{}, version, fmt.Errorf("%s has configuration version %d, older than this hv reads (%d to %d): %w",
			path, version, supported[0], CurrentVersion, errdefs.ErrInvalid)
	}
	if version < CurrentVersion {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return Config{}, version, err
		}
		for v := version; v < CurrentVersion; v++ {
			if err := migrations[v](m); err != nil {
				return Config{}, version, fmt.Errorf("%s: upgrading configuration version %d: %w", path, v, err)
			}
		}
		raw, _ = json.Marshal(m)
	}
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, version, fmt.Errorf("%s: %v: %w", path, err, errdefs.ErrInvalid)
	}
	// The checksum catches damage, not an attacker (an imported file is
	// anyone's): every field is checked before hv uses any.
	if err := c.Validate(); err != nil {
		return Config{}, version, fmt.Errorf("%s: %w", path, err)
	}
	return c, version, nil
}

// Clone returns a copy of c that shares no slice or map with it.
func (c Config) Clone() Config {
	out := c
	out.Disks = append([]Disk(nil), c.Disks...)
	out.NICs = append([]NIC(nil), c.NICs...)
	out.DisabledServices = append([]string(nil), c.DisabledServices...)
	if c.KVP != nil {
		out.KVP = make(map[string]string, len(c.KVP))
		for k, v := range c.KVP {
			out.KVP[k] = v
		}
	}
	if c.DynamicMemory != nil {
		dm := *c.DynamicMemory
		out.DynamicMemory = &dm
	}
	if c.CriticalErrorTimeoutSeconds != nil {
		t := *c.CriticalErrorTimeoutSeconds
		out.CriticalErrorTimeoutSeconds = &t
	}
	if c.Disks == nil {
		out.Disks = nil
	}
	if c.NICs == nil {
		out.NICs = nil
	}
	if c.DisabledServices == nil {
		out.DisabledServices = nil
	}
	return out
}
