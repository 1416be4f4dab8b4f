// Package api holds the types of hv's REST API, version 1.0: the contract shared by
// hvd, the hv CLI, the Go client and third-party tools. openapi.yaml documents it.
package api

import "time"

// Version is the API version prefix of every path.
const Version = "1.0"

// VM states (Hyper-V's names).
const (
	StateOff            = "Off"
	StateStarting       = "Starting"
	StateRunning        = "Running"
	StatePaused         = "Paused"
	StateSaving         = "Saving"
	StateSaved          = "Saved"
	StateStopping       = "Stopping"
	StatePausedCritical = "PausedCritical"
)

// Heartbeat states.
const (
	HeartbeatOK                = "OK"
	HeartbeatNoContact         = "NoContact"
	HeartbeatLostCommunication = "LostCommunication"
	HeartbeatDisabled          = "Disabled"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
}

// HostInfo answers GET /1.0/host.
type HostInfo struct {
	Version            string   `json:"version"`
	APIVersion         string   `json:"api_version"`
	Hostname           string   `json:"hostname"`
	Accelerator        string   `json:"accelerator"` // kvm | tcg
	AcceleratorWarning string   `json:"accelerator_warning,omitempty"`
	QEMUVersion        string   `json:"qemu_version"`
	QEMUBinary         string   `json:"qemu_binary"`
	CPUs               int      `json:"cpus"`
	MemoryBytes        uint64   `json:"memory_bytes"`
	MemoryFreeBytes    uint64   `json:"memory_available_bytes"`
	Root               string   `json:"root"`
	VMs                int      `json:"vms"`
	VMsRunning         int      `json:"vms_running"`
	ConfigVersion      int      `json:"config_version"`       // the VM configuration version this host writes
	ConfigVersions     []int    `json:"config_versions_read"` // every version it reads
	Firmware           Firmware `json:"firmware"`
}

// Firmware says which firmware files the host found.
type Firmware struct {
	BIOS           string `json:"bios,omitempty"`
	UEFICode       string `json:"uefi_code,omitempty"`
	UEFIVars       string `json:"uefi_vars,omitempty"`
	SecureBootCode string `json:"secure_boot_code,omitempty"`
	SecureBootVars string `json:"secure_boot_vars,omitempty"`
}

// Disk is one virtual disk of a VM.
type Disk struct {
	Name         string `json:"name"` // e.g. "root", "data1"
	Path         string `json:"path"`
	Format       string `json:"format"`
	VirtualBytes uint64 `json:"virtual_bytes"`
	Boot         bool   `json:"boot,omitempty"`
}

// VM is the representation of one VM (GET /1.0/vms/{name}).
type VM struct {
	Name          string     `json:"name"`
	ID            string     `json:"id"`
	Generation    int        `json:"generation"`
	SecureBoot    bool       `json:"secure_boot"`
	State         string     `json:"state"`
	StateReason   string     `json:"state_reason,omitempty"` // why it is in this state (e.g. why it went Off)
	Heartbeat     string     `json:"heartbeat"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	ConfigVersion int        `json:"config_version"`
	CPUs          int        `json:"cpus"`
	MemoryBytes   uint64     `json:"memory_bytes"`
	Disks         []Disk     `json:"disks"`
	Kernel        string     `json:"kernel,omitempty"`
	Initrd        string     `json:"initrd,omitempty"`
	Cmdline       string     `json:"cmdline,omitempty"`
	Accelerator   string     `json:"accelerator"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	PID           int        `json:"pid,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	Directory     string     `json:"directory"`
}

// VMCreate is the body of POST /1.0/vms.
type VMCreate struct {
	Name       string `json:"name"`
	Generation int    `json:"generation,omitempty"` // 1 or 2; default 2
	SecureBoot bool   `json:"secure_boot,omitempty"`
	CPUs       int    `json:"cpus,omitempty"`   // default 1
	Memory     string `json:"memory,omitempty"` // e.g. "512M"; default 512M
	// Image is copied into the VM's directory as its boot disk (qcow2, raw, vmdk, vhdx...).
	Image string `json:"image,omitempty"`
	// DiskSize creates an empty boot disk of this size when no image is given, or grows the copy.
	DiskSize string `json:"disk_size,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	Initrd   string `json:"initrd,omitempty"`
	Cmdline  string `json:"cmdline,omitempty"`
	Start    bool   `json:"start,omitempty"`
}

// VMUpdate is the body of PATCH /1.0/vms/{name}; only the fields given change.
type VMUpdate struct {
	CPUs    *int    `json:"cpus,omitempty"`
	Memory  *string `json:"memory,omitempty"`
	Cmdline *string `json:"cmdline,omitempty"`
}

// VM state actions for PUT /1.0/vms/{name}/state.
const (
	ActionStart  = "start"
	ActionStop   = "stop"
	ActionKill   = "kill"
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionSave   = "save"
)

// VMStatePut is the body of PUT /1.0/vms/{name}/state.
type VMStatePut struct {
	Action string `json:"action"`
	// Timeout bounds a graceful stop, in seconds (default 60). After it the stop fails
	// unless Force is set, in which case the VM is turned off.
	Timeout int  `json:"timeout,omitempty"`
	Force   bool `json:"force,omitempty"`
}

// ExecRequest is the body of POST /1.0/vms/{name}/exec.
type ExecRequest struct {
	Command []string `json:"command"`
	Env     []string `json:"env,omitempty"`
	// Stdin is passed to the command (raw bytes, base64 in JSON).
	Stdin   []byte `json:"stdin,omitempty"`
	Timeout int    `json:"timeout,omitempty"` // seconds, default 60
}

// ExecResult is the result of an exec operation.
type ExecResult struct {
	ExitCode  int    `json:"exit_code"`
	Signal    int    `json:"signal,omitempty"`
	Stdout    []byte `json:"stdout"`
	Stderr    []byte `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Operation statuses.
const (
	OpPending   = "pending"
	OpRunning   = "running"
	OpSuccess   = "success"
	OpFailure   = "failure"
	OpCancelled = "cancelled"
)

// Operation is long work tracked by hvd (GET /1.0/operations/{id}).
type Operation struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"` // e.g. "vm.start"
	Status    string    `json:"status"`
	Progress  *Progress `json:"progress,omitempty"`
	Error     string    `json:"error,omitempty"`
	ErrorCode int       `json:"error_code,omitempty"`
	Resources []string  `json:"resources"` // API paths the operation touches
	Result    any       `json:"result,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	MayCancel bool      `json:"may_cancel"`
}

// Progress of an operation; Total is 0 when unknown.
type Progress struct {
	Stage string `json:"stage,omitempty"`
	Done  uint64 `json:"done"`
	Total uint64 `json:"total"`
	Unit  string `json:"unit,omitempty"` // "bytes", "percent"
}

// Event is one line of the GET /1.0/events stream (newline-delimited JSON).
type Event struct {
	Type     string    `json:"type"` // "vm", "operation", "log"
	Time     time.Time `json:"time"`
	Resource string    `json:"resource,omitempty"`
	Action   string    `json:"action,omitempty"` // e.g. "state-changed", "created", "deleted"
	Message  string    `json:"message,omitempty"`
	Metadata any       `json:"metadata,omitempty"`
}

// DiskCreate is the body of POST /1.0/disks.
type DiskCreate struct {
	Path   string `json:"path"`
	Size   string `json:"size"`
	Format string `json:"format,omitempty"` // qcow2 (default) or raw
}

// DiskResize is the body of POST /1.0/disks/resize.
type DiskResize struct {
	Path string `json:"path"`
	Size string `json:"size"` // absolute new size; shrinking is refused
}

// DiskConvert is the body of POST /1.0/disks/convert.
type DiskConvert struct {
	Source string `json:"source"`
	Target string `json:"target"`
	Format string `json:"format,omitempty"` // target format, default qcow2
}

// DiskInfo answers GET /1.0/disks/info?path=...
type DiskInfo struct {
	Path         string `json:"path"`
	Format       string `json:"format"`
	VirtualBytes uint64 `json:"virtual_bytes"`
	ActualBytes  uint64 `json:"actual_bytes"`
	BackingFile  string `json:"backing_file,omitempty"`
	Dirty        bool   `json:"dirty,omitempty"`
	Encrypted    bool   `json:"encrypted,omitempty"`
}
