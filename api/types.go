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

// Error is the body of every non-2xx answer. Hint, when set, is advice on
// what to do next, kept apart from the message so that each client words it
// its own way.
type Error struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
	Hint  string `json:"hint,omitempty"`
}

// HostInfo answers GET /1.0/host.
type HostInfo struct {
	Version            string `json:"version"`
	APIVersion         string `json:"api_version"`
	Hostname           string `json:"hostname"`
	Accelerator        string `json:"accelerator"` // kvm | tcg
	AcceleratorWarning string `json:"accelerator_warning,omitempty"`
	// AcceleratorCPU is the CPU model VMs get: the one the probe showed to
	// run guest code under KVM, max under TCG.
	AcceleratorCPU string `json:"accelerator_cpu"`
	// AcceleratorMode is what hvd was asked for: auto, kvm or tcg.
	AcceleratorMode     string    `json:"accelerator_mode"`
	AcceleratorProbedAt time.Time `json:"accelerator_probed_at"`
	QEMUVersion         string    `json:"qemu_version"`
	QEMUBinary          string    `json:"qemu_binary"`
	CPUs                int       `json:"cpus"`
	MemoryBytes         uint64    `json:"memory_bytes"`
	MemoryFreeBytes     uint64    `json:"memory_available_bytes"`
	Root                string    `json:"root"`
	VMs                 int       `json:"vms"`
	VMsRunning          int       `json:"vms_running"`
	ConfigVersion       int       `json:"config_version"`       // the VM configuration version this host writes
	ConfigVersions      []int     `json:"config_versions_read"` // every version it reads
	Firmware            Firmware  `json:"firmware"`
	// MachineTypes are the versioned machine types its QEMU runs (e.g.
	// pc-i440fx-7.2): a VM moves live only to a host that has its own.
	MachineTypes []string `json:"machine_types,omitempty"`
	// TLSFingerprint is the SHA-256 of hvd's certificate, 64 hex digits:
	// what clients and peers pin. Listen is where it serves the API over
	// TLS (empty: the unix socket only).
	TLSFingerprint string   `json:"tls_fingerprint"`
	Listen         []string `json:"listen,omitempty"`
	// Storage are the directories VMs live in (LOCATION/NAME), the
	// default (ROOT/vms) first.
	Storage []StorageLocation `json:"storage"`
}

// StorageLocation is a directory of VMs on a host (hvd --storage NAME=DIR).
type StorageLocation struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	SizeBytes uint64 `json:"size_bytes"` // of the file system holding it
	FreeBytes uint64 `json:"free_bytes"`
	VMs       int    `json:"vms"`
}

// VMMoveStorage is the body of POST /1.0/vms/{name}/move-storage.
type VMMoveStorage struct {
	// To is the storage location to move the VM's files to.
	To string `json:"to"`
	// Quick lets a running VM move: saved here, moved, restored (its guest
	// pauses for the copy). Without it only an Off or Saved VM moves.
	Quick bool `json:"quick,omitempty"`
}

// MoveStorageResult is the result of a storage move's operation.
type MoveStorageResult struct {
	VM   string `json:"vm"`
	From string `json:"from"`
	To   string `json:"to"`
	// Renamed: both locations are on one file system, so the directory
	// was renamed and nothing copied.
	Renamed   bool   `json:"renamed"`
	Bytes     uint64 `json:"bytes"` // copied
	Quick     bool   `json:"quick"`
	Downtime  int64  `json:"downtime_ms,omitempty"` // quick: from the save to the restore
	TotalTime int64  `json:"total_time_ms"`
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
	Storage       string     `json:"storage"` // the storage location holding its files
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
	// MaxMemoryBytes is the ceiling for memory hot-add while running (generation 2).
	MaxMemoryBytes uint64         `json:"max_memory_bytes,omitempty"`
	DynamicMemory  *DynamicMemory `json:"dynamic_memory,omitempty"`
	// AssignedMemoryBytes is what the guest has now (startup + hot-added - ballooned).
	AssignedMemoryBytes uint64 `json:"assigned_memory_bytes,omitempty"`
	Nested              bool   `json:"nested,omitempty"`
	// CPUCompat: processor compatibility, a generic CPU model every host runs.
	CPUCompat bool              `json:"cpu_compat,omitempty"`
	NICs      []NIC             `json:"nics"`
	Guest     *GuestInfo        `json:"guest,omitempty"` // what the guest reports (data exchange)
	KVP       map[string]string `json:"kvp,omitempty"`   // host-set pairs the guest can read
	// CheckpointType is what a checkpoint takes when none is named.
	CheckpointType string `json:"checkpoint_type"`
	// CriticalErrorAction is what a host I/O error on a disk does: pause
	// (PausedCritical until the storage answers again) or none (the guest
	// gets the error). CriticalErrorTimeoutSeconds turns a VM off that
	// stayed PausedCritical that long (0: never).
	CriticalErrorAction         string `json:"critical_error_action"`
	CriticalErrorTimeoutSeconds int64  `json:"critical_error_timeout_seconds"`
	// CriticalSince is when the VM last paused for a storage error, while
	// hvd still waits for that storage (PausedCritical, or retrying).
	CriticalSince *time.Time `json:"critical_since,omitempty"`
}

// Critical error actions (Hyper-V's AutomaticCriticalErrorAction).
const (
	CriticalErrorPause = "pause"
	CriticalErrorNone  = "none"
)

// DefaultCriticalErrorTimeoutSeconds is Hyper-V's default
// AutomaticCriticalErrorActionTimeout: 30 minutes.
const DefaultCriticalErrorTimeoutSeconds = 30 * 60

// DynamicMemory is Hyper-V's dynamic memory: the guest starts with the VM's
// memory, grows by hot-add up to Maximum when it needs more, and gives memory
// back through the balloon down to Minimum when idle.
type DynamicMemory struct {
	Enabled       bool   `json:"enabled"`
	MinimumBytes  uint64 `json:"minimum_bytes"`
	MaximumBytes  uint64 `json:"maximum_bytes"`
	BufferPercent int    `json:"buffer_percent"` // spare memory kept above the guest's demand
}

// NIC is one network adapter of a VM. Its MAC is chosen once and kept for life.
type NIC struct {
	Name   string `json:"name"` // e.g. "eth0"
	Switch string `json:"switch"`
	MAC    string `json:"mac"`
	VLAN   int    `json:"vlan,omitempty"`
	Tap    string `json:"tap,omitempty"` // host interface while the VM runs
}

// GuestInfo is what the guest reports through its agent (Hyper-V's KVP exchange).
type GuestInfo struct {
	OSName        string           `json:"os_name,omitempty"`
	OSVersion     string           `json:"os_version,omitempty"`
	OSID          string           `json:"os_id,omitempty"`
	KernelRelease string           `json:"kernel_release,omitempty"`
	Hostname      string           `json:"hostname,omitempty"`
	AgentVersion  string           `json:"agent_version,omitempty"`
	Interfaces    []GuestInterface `json:"interfaces,omitempty"`
	UpdatedAt     time.Time        `json:"updated_at"`
}

// GuestInterface is one network interface as the guest sees it.
type GuestInterface struct {
	Name        string   `json:"name"`
	MAC         string   `json:"mac,omitempty"`
	IPAddresses []string `json:"ip_addresses,omitempty"` // CIDR notation
}

// Integration service names (Hyper-V's integration services).
const (
	ServiceHeartbeat     = "heartbeat"
	ServiceShutdown      = "shutdown"
	ServiceTimeSync      = "time-sync"
	ServiceDataExchange  = "data-exchange"  // KVP: guest facts and host-set pairs
	ServiceGuestServices = "guest-services" // file copy
	ServiceDirectSession = "direct-session" // exec and interactive sessions (PowerShell Direct)
	ServiceBackup        = "backup"         // file-system freeze and thaw (VSS)
)

// IntegrationService is one service's setting and status for a VM.
type IntegrationService struct {
	Name        string     `json:"name"`
	Enabled     bool       `json:"enabled"`
	Status      string     `json:"status"` // OK, NoContact, Disabled, Unsupported (the agent lacks its commands)
	LastContact *time.Time `json:"last_contact,omitempty"`
	Detail      string     `json:"detail,omitempty"`
}

// IntegrationUpdate is the body of PATCH /1.0/vms/{name}/integration.
type IntegrationUpdate struct {
	Enable  []string `json:"enable,omitempty"`
	Disable []string `json:"disable,omitempty"`
}

// KVPPut is the body of PUT /1.0/vms/{name}/kvp/{key}.
type KVPPut struct {
	Value string `json:"value"`
}

// TimeSyncResult answers POST /1.0/vms/{name}/time-sync.
type TimeSyncResult struct {
	GuestTimeBefore time.Time `json:"guest_time_before"`
	HostTime        time.Time `json:"host_time"`
	OffsetSeconds   float64   `json:"offset_seconds"` // guest minus host, before the correction
}

// FreezeRequest is the body of POST /1.0/vms/{name}/freeze.
type FreezeRequest struct {
	// Timeout bounds the freeze in seconds (default 10, at most 300): hvd thaws the
	// guest then, and a guard process thaws it even if hvd dies.
	Timeout int `json:"timeout,omitempty"`
}

// FreezeStatus answers freeze and thaw.
type FreezeStatus struct {
	Frozen        bool       `json:"frozen"`
	FileSystems   int        `json:"file_systems"`
	FrozenAt      *time.Time `json:"frozen_at,omitempty"`
	ThawDeadline  *time.Time `json:"thaw_deadline,omitempty"`
	FrozenSeconds float64    `json:"frozen_seconds,omitempty"`
}

// FileInfo answers a file upload (PUT /1.0/vms/{name}/files?path=).
type FileInfo struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// NICAdd is the body of POST /1.0/vms/{name}/nics.
type NICAdd struct {
	Switch string `json:"switch"`
	Name   string `json:"name,omitempty"` // default eth0, eth1...
	MAC    string `json:"mac,omitempty"`  // default: generated, locally administered
	VLAN   int    `json:"vlan,omitempty"` // 1-4094; 0 = untagged
}

// DiskAdd is the body of POST /1.0/vms/{name}/disks.
type DiskAdd struct {
	Name string `json:"name,omitempty"` // default data1, data2...
	Path string `json:"path,omitempty"` // an existing image to attach (copied in)
	Size string `json:"size,omitempty"` // or a new empty disk of this size
}

// Switch types (Hyper-V's virtual switch types).
const (
	SwitchExternal = "external" // bridged to a host uplink
	SwitchInternal = "internal" // VMs and the host
	SwitchPrivate  = "private"  // VMs only
)

// Switch is a virtual switch (GET /1.0/switches/{name}).
type Switch struct {
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Bridge string   `json:"bridge"`           // the host's bridge interface
	Uplink string   `json:"uplink,omitempty"` // external
	Subnet string   `json:"subnet,omitempty"` // internal: the host's address, e.g. 10.44.0.1/24
	DHCP   bool     `json:"dhcp,omitempty"`   // internal: dnsmasq serves the subnet
	Ports  []string `json:"ports"`            // "vm/nic" of connected running NICs
	State  string   `json:"state"`            // Up, Down (bridge missing or down)
}

// SwitchCreate is the body of POST /1.0/switches.
type SwitchCreate struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Uplink string `json:"uplink,omitempty"`
	Subnet string `json:"subnet,omitempty"`
	DHCP   bool   `json:"dhcp,omitempty"`
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
	// MaxMemory is the hot-add ceiling (generation 2); default 4x memory, at most the host's.
	MaxMemory string `json:"max_memory,omitempty"`
	Nested    bool   `json:"nested,omitempty"` // expose VMX/SVM to the guest (needs KVM)
	// CPUCompat runs the VM on a generic CPU model every host runs, so that it
	// moves live between hosts with different CPUs (not with nested).
	CPUCompat bool `json:"cpu_compat,omitempty"`
	// Storage is the storage location the VM lives in (default: "default",
	// hvd's ROOT/vms).
	Storage string `json:"storage,omitempty"`
	// CriticalErrorAction is pause (default) or none; see VM.
	CriticalErrorAction string `json:"critical_error_action,omitempty"`
	// CriticalErrorTimeoutSeconds: default 1800; 0 never turns the VM off.
	CriticalErrorTimeoutSeconds *int64 `json:"critical_error_timeout_seconds,omitempty"`
}

// VMUpdate is the body of PATCH /1.0/vms/{name}; only the fields given change.
type VMUpdate struct {
	CPUs    *int    `json:"cpus,omitempty"`
	Memory  *string `json:"memory,omitempty"` // while Running (generation 2): hot-add up to max_memory
	Cmdline *string `json:"cmdline,omitempty"`
	// MaxMemory, Nested, CPUCompat and DynamicMemory change only while Off.
	MaxMemory     *string              `json:"max_memory,omitempty"`
	Nested        *bool                `json:"nested,omitempty"`
	CPUCompat     *bool                `json:"cpu_compat,omitempty"`
	DynamicMemory *DynamicMemoryUpdate `json:"dynamic_memory,omitempty"`
	// CheckpointType is production (default), production-only, standard or disabled.
	CheckpointType *string `json:"checkpoint_type,omitempty"`
	// CriticalErrorAction (pause or none) changes only while Off: it is on
	// QEMU's command line. CriticalErrorTimeoutSeconds changes in any state.
	CriticalErrorAction         *string `json:"critical_error_action,omitempty"`
	CriticalErrorTimeoutSeconds *int64  `json:"critical_error_timeout_seconds,omitempty"`
}

// DynamicMemoryUpdate sets dynamic memory; sizes as strings ("1G").
type DynamicMemoryUpdate struct {
	Enabled       bool   `json:"enabled"`
	Minimum       string `json:"minimum,omitempty"`
	Maximum       string `json:"maximum,omitempty"`
	BufferPercent int    `json:"buffer_percent,omitempty"` // default 20
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
	// Interactive runs the command on a pseudo-terminal in the guest; the caller
	// joins it at GET /1.0/operations/{id}/session (Upgrade: hv-session), and the
	// operation's result carries the exit code once it ends.
	Interactive bool `json:"interactive,omitempty"`
	Rows        int  `json:"rows,omitempty"` // terminal size for Interactive
	Cols        int  `json:"cols,omitempty"`
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
	ErrorHint string    `json:"error_hint,omitempty"` // as Error.Hint
	Resources []string  `json:"resources"`            // API paths the operation touches
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

// Checkpoint types. A VM's setting (VMUpdate.CheckpointType) picks what
// "hv checkpoint create" takes when the request names no type.
const (
	// CheckpointProduction: the guest freezes its file systems through its
	// agent; disks only; applying it boots the VM cold. Falls back to a
	// standard checkpoint when the guest cannot freeze, and says so.
	CheckpointProduction = "production"
	// CheckpointProductionOnly: production, and fail when the guest cannot freeze.
	CheckpointProductionOnly = "production-only"
	// CheckpointStandard: disks, memory and device state; applying it puts
	// the VM back exactly as it was, running or paused.
	CheckpointStandard = "standard"
	// CheckpointDisabled (as a VM's setting only): checkpoints are refused.
	CheckpointDisabled = "disabled"
)

// Checkpoint is one node of a VM's checkpoint tree
// (GET /1.0/vms/{name}/checkpoints).
type Checkpoint struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Parent    string    `json:"parent,omitempty"` // the parent's name; "" for a root
	Type      string    `json:"type"`             // production or standard
	CreatedAt time.Time `json:"created_at"`
	// Current: the VM's disks back on this checkpoint ("Now" hangs below it).
	Current bool `json:"current"`
	// HasMemory: applying it resumes the VM where it was; otherwise it boots cold.
	HasMemory bool `json:"has_memory"`
	// FrozenSeconds is how long the guest's file systems were frozen (production).
	FrozenSeconds float64 `json:"frozen_seconds,omitempty"`
	// FellBack: production was asked for, the guest could not freeze, so this
	// is a standard checkpoint; FallbackReason says why.
	FellBack       bool   `json:"fell_back,omitempty"`
	FallbackReason string `json:"fallback_reason,omitempty"`
	SizeBytes      uint64 `json:"size_bytes"` // host space of its disk images and state file
	// Disks are the disks it holds, by name.
	Disks []string `json:"disks"`
}

// CheckpointCreate is the body of POST /1.0/vms/{name}/checkpoints.
type CheckpointCreate struct {
	Name string `json:"name,omitempty"` // default: from the time
	// Type is production, production-only or standard; default: the VM's setting.
	Type string `json:"type,omitempty"`
	// FreezeTimeout bounds the guest's freeze in seconds (default 10).
	FreezeTimeout int `json:"freeze_timeout,omitempty"`
}

// CheckpointApply is the body of POST /1.0/vms/{name}/checkpoints/{checkpoint}/apply.
type CheckpointApply struct {
	// SaveCurrent, when given, first keeps the VM's current state as a
	// checkpoint of this name (a branch of its own); otherwise what changed
	// since the current checkpoint is dropped, as in Hyper-V.
	SaveCurrent string `json:"save_current,omitempty"`
}

// CheckpointRename is the body of PATCH /1.0/vms/{name}/checkpoints/{checkpoint}.
type CheckpointRename struct {
	Name string `json:"name"`
}

// VMExport is the body of POST /1.0/vms/{name}/export.
type VMExport struct {
	// Dir is created by the export and must not exist; an absolute path on the host.
	Dir string `json:"dir"`
	// NoCheckpoints exports the current state only, each disk flattened into one image.
	NoCheckpoints bool `json:"no_checkpoints,omitempty"`
}

// Import modes.
const (
	ImportCopy     = "copy"     // copy the directory into hv's store (default); the export stays
	ImportRegister = "register" // move the directory into hv's store (same file system; fast)
)

// VMImport is the body of POST /1.0/imports.
type VMImport struct {
	Dir  string `json:"dir"`            // an export: holds config.json
	Name string `json:"name,omitempty"` // default: the exported VM's name
	Mode string `json:"mode,omitempty"` // copy (default) or register
	// NewID gives the VM a new identity (ID and NIC MACs), for a copy that
	// runs beside the original.
	NewID bool `json:"new_id,omitempty"`
}

// Backup consistencies (BackupCreate.Consistency, Backup.Consistency).
const (
	// ConsistencyApplication: the guest froze its file systems for the point
	// in time, as a production checkpoint does (Hyper-V's VSS backup).
	ConsistencyApplication = "application"
	// ConsistencyCrash: the disks as if the power had been cut.
	ConsistencyCrash = "crash"
)

// BackupCreate is the body of POST /1.0/vms/{name}/backups: it opens a
// point-in-time view of the VM's disks for a backup tool to read over NBD.
type BackupCreate struct {
	// Consistency is application (default: freeze the guest, else fall back
	// to crash and say why) or crash.
	Consistency string `json:"consistency,omitempty"`
	// Since is the reference point (the ID of a finished backup) to list
	// changes from; null or "" reads every disk whole (a full backup).
	Since *string `json:"since"`
	// FreezeTimeout bounds the guest's freeze in seconds (default 10).
	FreezeTimeout int `json:"freeze_timeout,omitempty"`
	// Timeout is how many seconds the backup may stay open before hv aborts
	// it (default 86400): a tool that dies does not hold the VM for ever.
	Timeout int `json:"timeout,omitempty"`
}

// Backup is an open backup: each disk as it was at Time, exported read-only
// over NBD until the backup is finished or aborted
// (GET /1.0/vms/{name}/backups/{backup}).
type Backup struct {
	// ID names the backup; finishing it makes ID a reference point that a
	// later backup's Since may name.
	ID   string `json:"id"`
	VM   string `json:"vm"`
	VMID string `json:"vm_id"`
	// Time is the disks' point in time.
	Time time.Time `json:"time"`
	// Consistency is what the backup got; ConsistencyReason says why it is
	// crash when application was asked for.
	Consistency       string `json:"consistency"`
	ConsistencyReason string `json:"consistency_reason,omitempty"`
	// FrozenSeconds is how long the guest's file systems were frozen.
	FrozenSeconds float64 `json:"frozen_seconds,omitempty"`
	// Since is the reference point changes are listed from ("" when full).
	Since string `json:"since,omitempty"`
	// Online: the VM runs and QEMU serves the view (writes of the guest go on
	// beside it); otherwise the VM is off and may not start until the backup ends.
	Online    bool         `json:"online"`
	ExpiresAt time.Time    `json:"expires_at"`
	Disks     []BackupDisk `json:"disks"`
}

// BackupDisk is one disk of an open backup and where to read it.
type BackupDisk struct {
	Name string `json:"name"`
	Size int64  `json:"size"` // virtual size in bytes
	// Socket is the NBD server's unix socket on the host, Export the export's
	// name there (read-only; structured replies and block status).
	Socket string `json:"socket"`
	Export string `json:"export"`
	// Incremental: only the extents the dirty bitmap marks changed since the
	// reference point need reading; the NBD meta context DirtyBitmap lists
	// them (as does GET .../disks/{disk}/changes). Otherwise read the whole
	// disk (base:allocation tells holes from data), and FullReason says why.
	Incremental bool   `json:"incremental"`
	FullReason  string `json:"full_reason,omitempty"`
	DirtyBitmap string `json:"dirty_bitmap,omitempty"`
	// ChangedBytes is the size of the changed extents (incremental only);
	// Granularity the bitmap's unit in bytes.
	ChangedBytes int64 `json:"changed_bytes,omitempty"`
	Granularity  int64 `json:"granularity,omitempty"`
}

// BackupFile is a file of the VM that hvd serves beside an open backup's disks
// (GET /1.0/vms/{name}/backups/{backup}/files), so that a backup tool stores
// what a restore needs without reading hvd's directories.
type BackupFile struct {
	// Name is what the API calls it: BackupFileConfig, BackupFileNVRAM,
	// BackupFileKernel or BackupFileInitrd.
	Name string `json:"name"`
	// File is its name in the VM's directory (config.json, nvram.fd, ...).
	File string `json:"file"`
	Size int64  `json:"size"`
}

// The files a backup serves, when the VM has them.
const (
	BackupFileConfig = "config" // the VM's configuration file (config.json), as hvd keeps it
	BackupFileNVRAM  = "nvram"  // its UEFI variables (generation 2)
	BackupFileKernel = "kernel" // the kernel it boots directly, if any
	BackupFileInitrd = "initrd" // and its initrd
)

// Extent is a byte range of a disk (GET .../backups/{backup}/disks/{disk}/changes).
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// ReferencePoint is a finished backup whose changes a VM tracks
// (GET /1.0/vms/{name}/tracking).
type ReferencePoint struct {
	ID          string    `json:"id"`
	Time        time.Time `json:"time"`
	Consistency string    `json:"consistency"`
	// Disks are the disks changes are tracked for since this point.
	Disks []string `json:"disks"`
}

// ChangeTracking is a VM's change tracking (Hyper-V's resilient change
// tracking): the reference points a backup may start from and, per disk,
// whether its tracking is intact.
type ChangeTracking struct {
	ReferencePoints []ReferencePoint `json:"reference_points"`
	Disks           []TrackedDisk    `json:"disks"`
	// Open is the backup in progress, if any.
	Open *Backup `json:"open,omitempty"`
}

// TrackedDisk says whether changes to a disk are tracked; when not, the next
// backup reads it whole and Reason says why.
type TrackedDisk struct {
	Name    string `json:"name"`
	Tracked bool   `json:"tracked"`
	Reason  string `json:"reason,omitempty"`
}
