package api

import "time"

// VMMove is the body of POST /1.0/vms/{name}/move: move the VM to another
// host (a peer of this one). A running or paused VM moves live (its disks
// mirrored, then its memory, with a pause of milliseconds at the
// switch-over); a VM that is off or saved moves by copying its files.
type VMMove struct {
	// To is the peer host's name, as this host knows it (GET /1.0/peers).
	To string `json:"to"`
	// KeepSource keeps the VM's files on this host, as a VM that is off,
	// instead of removing them once the target runs it.
	KeepSource bool `json:"keep_source,omitempty"`
	// Bandwidth bounds the files' copy and the memory stream in bytes per
	// second; 0: both unbounded (QEMU's own 128 MiB/s cap on the memory
	// is lifted, as libvirt does).
	Bandwidth uint64 `json:"bandwidth,omitempty"`
	// MaxDowntime is the longest pause of the guest at the switch-over, in
	// milliseconds (QEMU's downtime-limit); 0: 300.
	MaxDowntime uint64 `json:"max_downtime_ms,omitempty"`
	// NoAutoConverge keeps a guest that dirties memory faster than it
	// moves from being slowed down (then the move may never converge).
	NoAutoConverge bool `json:"no_auto_converge,omitempty"`
	// Quick moves a running VM by quick migration: saved here, its files
	// (the saved memory with them) copied over the hosts' API, restored
	// there. The guest stops for the whole copy, but the move needs no
	// port but the API's, and it ends even for a guest that dirties memory
	// faster than the link carries it.
	Quick bool `json:"quick,omitempty"`
}

// MoveResult is the result of a move operation.
type MoveResult struct {
	VM   string `json:"vm"`
	To   string `json:"to"`
	Live bool   `json:"live"`
	// Quick: the VM was saved, copied and restored (quick migration).
	Quick bool `json:"quick,omitempty"`
	// Downtime is the guest's pause at the switch-over as QEMU measured it
	// (ms), for a quick move the time from the save to the restore on the
	// target; TotalTime the whole move (ms).
	Downtime  int64 `json:"downtime_ms"`
	TotalTime int64 `json:"total_time_ms"`
	// FileBytes were copied as files (backing chains, states, NVRAM),
	// DiskBytes mirrored from the running disks, MemoryBytes sent as memory.
	FileBytes   uint64 `json:"file_bytes"`
	DiskBytes   uint64 `json:"disk_bytes"`
	MemoryBytes uint64 `json:"memory_bytes"`
	// KeptSource says the VM's files stayed on the source host.
	KeptSource bool `json:"kept_source,omitempty"`
}

// Incoming migrations, as the target host sees them. These routes are for
// peer hosts: the source's hvd drives them.

// MigrationCreate is the body of POST /1.0/migrations: a source host
// announces a VM it is about to send.
type MigrationCreate struct {
	// Config is the VM's config.json as the source keeps it; the target
	// checks it as it checks an import.
	Config []byte `json:"config"`
	// Files are the VM's files the source will send (PUT .../files/{name}),
	// beside the top images of a live move, which the target creates.
	Files []MigrationFile `json:"files"`
	// Live: the VM runs; its top images are mirrored, its memory follows.
	Live bool `json:"live"`
	// Tops are, for a live move, the top image of each disk and its
	// virtual size: the target creates them over the same backing chains.
	Tops []MigrationTop `json:"tops,omitempty"`
	// MachineType is the versioned machine type the VM runs with (e.g.
	// pc-i440fx-7.2); the target must have it.
	MachineType string `json:"machine_type,omitempty"`
	// CPUModel is the CPU model the VM runs with.
	CPUModel string `json:"cpu_model,omitempty"`
	// BootMemoryBytes, MaxMemoryBytes and HotplugPorts are the machine's
	// layout as QEMU started it, which the target must build alike (the
	// configuration may have changed since).
	BootMemoryBytes uint64 `json:"boot_memory_bytes,omitempty"`
	MaxMemoryBytes  uint64 `json:"max_memory_bytes,omitempty"`
	HotplugPorts    int    `json:"hotplug_ports,omitempty"`
	// QEMUVersion is the source's QEMU; the target's must not be older.
	QEMUVersion string `json:"qemu_version,omitempty"`
	// CACert is the source's certificate authority for this migration
	// alone (PEM): QEMU on the target accepts the source's QEMU only with
	// a certificate it signed. Both sides make a fresh one per migration;
	// the hosts' API connection (mutual TLS) is what vouches for it.
	CACert string `json:"ca_cert,omitempty"`
	// Saved: the VM comes saved, its memory in its saved state file (one
	// of Files); the machine's layout above is the one it was saved with.
	// The target keeps it Saved, or restores it when the commit says run.
	// SavedPaused: the guest was paused when saved (it stays paused).
	Saved       bool `json:"saved,omitempty"`
	SavedPaused bool `json:"saved_paused,omitempty"`
}

// MigrationFile is one file of a VM sent to the target.
type MigrationFile struct {
	Name string `json:"name"` // in the VM's directory, no path
	Size int64  `json:"size"`
}

// MigrationTop is the top image of a disk in a live move.
type MigrationTop struct {
	Disk          string `json:"disk"`
	File          string `json:"file"`
	Format        string `json:"format"`                   // qcow2 or raw
	Backing       string `json:"backing,omitempty"`        // the file it backs on, "" for none
	BackingFormat string `json:"backing_format,omitempty"` // qcow2 or raw
	VirtualBytes  uint64 `json:"virtual_bytes"`
	// Bitmaps are the change-tracking bitmaps on the top image; they
	// travel with the memory.
	Bitmaps []string `json:"bitmaps,omitempty"`
}

// Migration states, on the target.
const (
	MigrationReceiving = "receiving" // files arriving
	MigrationPrepared  = "prepared"  // QEMU waits for the disks and the memory
	MigrationCommitted = "committed" // the target runs the VM: the move is done
	MigrationAborted   = "aborted"   // nothing of the VM is left on the target
)

// Migration is an incoming migration on the target.
type Migration struct {
	ID        string    `json:"id"`
	VM        string    `json:"vm"`
	VMID      string    `json:"vm_id"`
	Source    string    `json:"source"` // the source host's certificate name
	State     string    `json:"state"`
	Live      bool      `json:"live"`
	CreatedAt time.Time `json:"created_at"`
	// Where the source sends, once prepared: the migration stream, and the
	// NBD server its disks are mirrored to (host:port each), and the name
	// the target's certificate carries for QEMU's TLS check.
	Listen      string `json:"listen,omitempty"`
	NBDListen   string `json:"nbd_listen,omitempty"`
	TLSHostname string `json:"tls_hostname,omitempty"`
	// CACert is the target's certificate authority for this migration
	// (PEM), which the source's QEMU checks the target's certificate
	// against.
	CACert string `json:"ca_cert,omitempty"`
	Error  string `json:"error,omitempty"`
}

// MigrationCommit is the body of POST /1.0/migrations/{id}/commit: the
// source's QEMU sent everything and is stopped; the target runs the VM.
type MigrationCommit struct {
	// Run: the guest was running on the source (not paused); for a saved
	// VM, restore it now (it stays paused if it was saved paused).
	Run bool `json:"run"`
}
