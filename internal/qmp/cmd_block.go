package qmp

import (
	"encoding/json"
	"fmt"

	"github.com/hvproject/hv/internal/errdefs"
)

// Typed commands for the block layer: nodes, dirty bitmaps, transactions,
// block jobs and NBD exports. Byte counts are uint64, as hv's sizes are.

// BlockdevOptions is a block node's definition: FileNode, Qcow2Node,
// RawNode or NBDNode.
type BlockdevOptions interface {
	blockDriver() string
}

// BlockdevAdd opens a block node ("blockdev-add").
type BlockdevAdd struct {
	Node BlockdevOptions
}

func (BlockdevAdd) Command() string { return "blockdev-add" }

func (b BlockdevAdd) MarshalJSON() ([]byte, error) {
	if b.Node == nil {
		return nil, fmt.Errorf("blockdev-add without a node; set Node: %w", errdefs.ErrInvalid)
	}
	return json.Marshal(b.Node)
}

// BlockdevCache is a node's cache mode ("BlockdevCacheOptions").
type BlockdevCache struct {
	Direct  bool `json:"direct,omitempty"`   // O_DIRECT
	NoFlush bool `json:"no-flush,omitempty"` // ignore the guest's flushes
}

// BlockdevRef is a child node: an existing node by Name, or a new one
// defined in place by Node. Exactly one is set.
type BlockdevRef struct {
	Name string
	Node BlockdevOptions
}

func (r BlockdevRef) isZero() bool { return r.Name == "" && r.Node == nil }

func (r BlockdevRef) MarshalJSON() ([]byte, error) {
	switch {
	case r.Name != "" && r.Node != nil:
		return nil, fmt.Errorf("node reference sets both Name %q and Node; set one: %w", r.Name, errdefs.ErrInvalid)
	case r.Name != "":
		return json.Marshal(r.Name)
	case r.Node != nil:
		return json.Marshal(r.Node)
	}
	return nil, fmt.Errorf("empty node reference; set Name or Node: %w", errdefs.ErrInvalid)
}

// FileNode is a protocol node over a host file ("driver": "file").
type FileNode struct {
	NodeName     string         `json:"node-name,omitempty"`
	ReadOnly     bool           `json:"read-only,omitempty"`
	AutoReadOnly bool           `json:"auto-read-only,omitempty"`
	ForceShare   bool           `json:"force-share,omitempty"`
	Discard      string         `json:"discard,omitempty"`       // "ignore" (default) or "unmap"
	DetectZeroes string         `json:"detect-zeroes,omitempty"` // "off", "on", "unmap"
	Cache        *BlockdevCache `json:"cache,omitempty"`

	Filename string `json:"filename"`
	Locking  string `json:"locking,omitempty"` // "auto", "on", "off"
	AIO      string `json:"aio,omitempty"`     // "threads", "native", "io_uring"
}

func (FileNode) blockDriver() string { return "file" }

func (n FileNode) MarshalJSON() ([]byte, error) {
	type plain FileNode
	return withTag("driver", "file", plain(n))
}

// Qcow2Node is a qcow2 format node ("driver": "qcow2").
//
// Its backing differs from QMP's default on purpose: an empty Backing sends
// "backing": null, no backing image at all, as hv's command line does
// (qemu.BlockdevArgs). Leaving "backing" out makes QEMU open whatever file
// the image header names, and hv never trusts a header (an imported image
// may name /dev/sda); set BackingFromHeader to ask for that explicitly.
type Qcow2Node struct {
	NodeName     string         `json:"node-name,omitempty"`
	ReadOnly     bool           `json:"read-only,omitempty"`
	AutoReadOnly bool           `json:"auto-read-only,omitempty"`
	ForceShare   bool           `json:"force-share,omitempty"`
	Discard      string         `json:"discard,omitempty"`
	DetectZeroes string         `json:"detect-zeroes,omitempty"`
	Cache        *BlockdevCache `json:"cache,omitempty"`

	// File is the node holding the image: usually a FileNode.
	File BlockdevRef `json:"file"`
	// Backing names the node under this one; "" means none.
	Backing string `json:"-"`
	// BackingFromHeader leaves "backing" out: QEMU opens the file the
	// image's header names. Not with Backing.
	BackingFromHeader bool `json:"-"`
	// DataFile is the external data file of an image made with one.
	DataFile      *BlockdevRef `json:"data-file,omitempty"`
	LazyRefcounts *bool        `json:"lazy-refcounts,omitempty"`
	CacheSize     uint64       `json:"cache-size,omitempty"`
}

func (Qcow2Node) blockDriver() string { return "qcow2" }

func (n Qcow2Node) MarshalJSON() ([]byte, error) {
	if n.File.isZero() {
		return nil, fmt.Errorf("qcow2 node %q without a file; set File: %w", n.NodeName, errdefs.ErrInvalid)
	}
	if n.Backing != "" && n.BackingFromHeader {
		return nil, fmt.Errorf("qcow2 node %q sets both Backing %q and BackingFromHeader; set one: %w", n.NodeName, n.Backing, errdefs.ErrInvalid)
	}
	type plain Qcow2Node
	v := struct {
		plain
		Backing json.RawMessage `json:"backing,omitempty"` // shadows plain's
	}{plain: plain(n)}
	switch {
	case n.BackingFromHeader:
	case n.Backing == "":
		v.Backing = json.RawMessage("null")
	default:
		v.Backing, _ = json.Marshal(n.Backing)
	}
	return withTag("driver", "qcow2", v)
}

// RawNode is a raw format node ("driver": "raw"); Offset and Size expose a
// slice of the file.
type RawNode struct {
	NodeName     string         `json:"node-name,omitempty"`
	ReadOnly     bool           `json:"read-only,omitempty"`
	AutoReadOnly bool           `json:"auto-read-only,omitempty"`
	ForceShare   bool           `json:"force-share,omitempty"`
	Discard      string         `json:"discard,omitempty"`
	DetectZeroes string         `json:"detect-zeroes,omitempty"`
	Cache        *BlockdevCache `json:"cache,omitempty"`

	File   BlockdevRef `json:"file"`
	Offset uint64      `json:"offset,omitempty"`
	Size   uint64      `json:"size,omitempty"`
}

func (RawNode) blockDriver() string { return "raw" }

func (n RawNode) MarshalJSON() ([]byte, error) {
	if n.File.isZero() {
		return nil, fmt.Errorf("raw node %q without a file; set File: %w", n.NodeName, errdefs.ErrInvalid)
	}
	type plain RawNode
	return withTag("driver", "raw", plain(n))
}

// NBDNode is a protocol node reading an NBD export ("driver": "nbd"): on a
// migration's destination, the source's disk as the mirror target's source.
type NBDNode struct {
	NodeName     string         `json:"node-name,omitempty"`
	ReadOnly     bool           `json:"read-only,omitempty"`
	AutoReadOnly bool           `json:"auto-read-only,omitempty"`
	ForceShare   bool           `json:"force-share,omitempty"`
	Discard      string         `json:"discard,omitempty"`
	DetectZeroes string         `json:"detect-zeroes,omitempty"`
	Cache        *BlockdevCache `json:"cache,omitempty"`

	Server      SocketAddress `json:"server"`
	Export      string        `json:"export,omitempty"`
	TLSCreds    string        `json:"tls-creds,omitempty"`
	TLSHostname string        `json:"tls-hostname,omitempty"` // checked against the server's certificate
	// ReconnectDelay is how many seconds requests wait for a lost server to
	// come back before they fail; 0 fails them at once.
	ReconnectDelay int `json:"reconnect-delay,omitempty"`
	// OpenTimeout is how many seconds blockdev-add retries connecting.
	OpenTimeout int `json:"open-timeout,omitempty"`
}

func (NBDNode) blockDriver() string { return "nbd" }

func (n NBDNode) MarshalJSON() ([]byte, error) {
	type plain NBDNode
	return withTag("driver", "nbd", plain(n))
}

// SocketAddress is where a server listens or a client connects, in QAPI's
// flat form: Type "unix" uses Path, "inet" Host and Port, "vsock" CID and
// Port, "fd" FD.
type SocketAddress struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
	Host string `json:"host,omitempty"`
	Port string `json:"port,omitempty"`
	CID  string `json:"cid,omitempty"`
	FD   string `json:"str,omitempty"` // a name given with GetFD, or a number
}

// UnixSocket is the address of a unix socket.
func UnixSocket(path string) SocketAddress { return SocketAddress{Type: "unix", Path: path} }

// InetSocket is a TCP address; port may be a number or a service name.
func InetSocket(host, port string) SocketAddress {
	return SocketAddress{Type: "inet", Host: host, Port: port}
}

// legacy encodes a in QAPI's older form, {"type": ..., "data": {...}},
// which nbd-server-start still takes.
func (a SocketAddress) legacy() (json.RawMessage, error) {
	if a.Type == "" {
		return nil, fmt.Errorf("socket address without a type; use UnixSocket or InetSocket: %w", errdefs.ErrInvalid)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(b, &data); err != nil {
		return nil, err
	}
	delete(data, "type")
	return json.Marshal(struct {
		Type string                     `json:"type"`
		Data map[string]json.RawMessage `json:"data"`
	}{a.Type, data})
}

// BlockdevDel closes a node nothing uses any more ("blockdev-del").
type BlockdevDel struct {
	NodeName string `json:"node-name"`
}

func (BlockdevDel) Command() string { return "blockdev-del" }

// Action is one action of a Transaction. Its encoding is the action's
// "data"; ActionType is its "type".
type Action interface {
	ActionType() string
}

// Transaction runs actions atomically ("transaction"): all take effect, or
// none and the error says which failed.
type Transaction struct {
	Actions []Action
	// CompletionMode "grouped" makes the jobs the actions start fail or
	// succeed together; "" is QEMU's default, "individual".
	CompletionMode string
}

func (Transaction) Command() string { return "transaction" }

func (t Transaction) MarshalJSON() ([]byte, error) {
	type action struct {
		Type string `json:"type"`
		Data Action `json:"data"`
	}
	type properties struct {
		CompletionMode string `json:"completion-mode"`
	}
	v := struct {
		Actions    []action    `json:"actions"`
		Properties *properties `json:"properties,omitempty"`
	}{Actions: make([]action, len(t.Actions))}
	for i, a := range t.Actions {
		if a == nil {
			return nil, fmt.Errorf("transaction action %d is nil: %w", i, errdefs.ErrInvalid)
		}
		v.Actions[i] = action{a.ActionType(), a}
	}
	if t.CompletionMode != "" {
		v.Properties = &properties{t.CompletionMode}
	}
	return json.Marshal(v)
}

// AbortAction fails its transaction; tests use it to prove atomicity.
type AbortAction struct{}

func (AbortAction) ActionType() string { return "abort" }

// BlockdevSnapshot makes Overlay, a node with no backing yet, the new top of
// Node's chain: Node's parents write to Overlay from then on
// ("blockdev-snapshot"). Also a transaction action.
type BlockdevSnapshot struct {
	Node    string `json:"node"`
	Overlay string `json:"overlay"`
}

func (BlockdevSnapshot) Command() string    { return "blockdev-snapshot" }
func (BlockdevSnapshot) ActionType() string { return "blockdev-snapshot" }

// BlockDirtyBitmapAdd creates a dirty bitmap ("block-dirty-bitmap-add").
// Also a transaction action.
type BlockDirtyBitmapAdd struct {
	Node        string `json:"node"`
	Name        string `json:"name"`
	Granularity uint64 `json:"granularity,omitempty"` // bytes; a power of 2; QEMU picks by default
	// Persistent bitmaps are stored in the qcow2 image when QEMU closes it.
	Persistent bool `json:"persistent,omitempty"`
	Disabled   bool `json:"disabled,omitempty"` // created not recording
}

func (BlockDirtyBitmapAdd) Command() string    { return "block-dirty-bitmap-add" }
func (BlockDirtyBitmapAdd) ActionType() string { return "block-dirty-bitmap-add" }

// BlockDirtyBitmapRemove deletes a bitmap, from the image too when it is
// persistent ("block-dirty-bitmap-remove"). Also a transaction action.
type BlockDirtyBitmapRemove struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

func (BlockDirtyBitmapRemove) Command() string    { return "block-dirty-bitmap-remove" }
func (BlockDirtyBitmapRemove) ActionType() string { return "block-dirty-bitmap-remove" }

// BlockDirtyBitmapClear marks a bitmap all clean ("block-dirty-bitmap-clear").
// Also a transaction action.
type BlockDirtyBitmapClear struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

func (BlockDirtyBitmapClear) Command() string    { return "block-dirty-bitmap-clear" }
func (BlockDirtyBitmapClear) ActionType() string { return "block-dirty-bitmap-clear" }

// BlockDirtyBitmapEnable starts a bitmap recording writes
// ("block-dirty-bitmap-enable"). Also a transaction action.
type BlockDirtyBitmapEnable struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

func (BlockDirtyBitmapEnable) Command() string    { return "block-dirty-bitmap-enable" }
func (BlockDirtyBitmapEnable) ActionType() string { return "block-dirty-bitmap-enable" }

// BlockDirtyBitmapDisable stops a bitmap recording writes
// ("block-dirty-bitmap-disable"). Also a transaction action.
type BlockDirtyBitmapDisable struct {
	Node string `json:"node"`
	Name string `json:"name"`
}

func (BlockDirtyBitmapDisable) Command() string    { return "block-dirty-bitmap-disable" }
func (BlockDirtyBitmapDisable) ActionType() string { return "block-dirty-bitmap-disable" }

// BlockDirtyBitmapMerge ORs Bitmaps into Target, a bitmap of Node
// ("block-dirty-bitmap-merge"). Also a transaction action.
type BlockDirtyBitmapMerge struct {
	Node    string      `json:"node"`
	Target  string      `json:"target"`
	Bitmaps []BitmapRef `json:"bitmaps"`
}

func (BlockDirtyBitmapMerge) Command() string    { return "block-dirty-bitmap-merge" }
func (BlockDirtyBitmapMerge) ActionType() string { return "block-dirty-bitmap-merge" }

// BitmapRef names a dirty bitmap: Name on Node, or with Node empty the bitmap
// Name on the node the command is about (encoded as just the name).
type BitmapRef struct {
	Node string
	Name string
}

func (b BitmapRef) MarshalJSON() ([]byte, error) {
	if b.Name == "" {
		return nil, fmt.Errorf("bitmap reference without a name (node %q): %w", b.Node, errdefs.ErrInvalid)
	}
	if b.Node == "" {
		return json.Marshal(b.Name)
	}
	return json.Marshal(struct {
		Node string `json:"node"`
		Name string `json:"name"`
	}{b.Node, b.Name})
}

// SyncMode is what a backup or mirror job copies.
type SyncMode string

const (
	SyncFull        SyncMode = "full" // everything the guest sees
	SyncTop         SyncMode = "top"  // the top image only; the target backs on the same chain
	SyncNone        SyncMode = "none" // only what the guest overwrites (fleecing)
	SyncIncremental SyncMode = "incremental"
	SyncBitmap      SyncMode = "bitmap"
)

// BlockdevBackup starts a backup job copying Device to Target
// ("blockdev-backup"). With SyncNone it copies old data aside before the
// guest overwrites it: the target is then a point-in-time view. Also a
// transaction action.
type BlockdevBackup struct {
	JobID          string   `json:"job-id,omitempty"`
	Device         string   `json:"device"`
	Target         string   `json:"target"`
	Sync           SyncMode `json:"sync"`
	Speed          uint64   `json:"speed,omitempty"` // bytes/s; 0 is unlimited
	Bitmap         string   `json:"bitmap,omitempty"`
	BitmapMode     string   `json:"bitmap-mode,omitempty"` // "on-success", "never", "always"
	Compress       bool     `json:"compress,omitempty"`
	OnSourceError  string   `json:"on-source-error,omitempty"`
	OnTargetError  string   `json:"on-target-error,omitempty"`
	AutoFinalize   *bool    `json:"auto-finalize,omitempty"`
	AutoDismiss    *bool    `json:"auto-dismiss,omitempty"`
	FilterNodeName string   `json:"filter-node-name,omitempty"`
}

func (BlockdevBackup) Command() string    { return "blockdev-backup" }
func (BlockdevBackup) ActionType() string { return "blockdev-backup" }

// BlockStream starts a job copying the data of Device's backing chain down
// to BaseNode into Device ("block-stream"); once done Device backs on
// BaseNode (nothing when empty), recorded in its header as BackingFile.
type BlockStream struct {
	JobID          string `json:"job-id,omitempty"`
	Device         string `json:"device"`
	BaseNode       string `json:"base-node,omitempty"`
	BackingFile    string `json:"backing-file,omitempty"`
	Bottom         string `json:"bottom,omitempty"` // instead of BaseNode: the last node copied
	Speed          uint64 `json:"speed,omitempty"`
	OnError        string `json:"on-error,omitempty"`
	FilterNodeName string `json:"filter-node-name,omitempty"`
	AutoFinalize   *bool  `json:"auto-finalize,omitempty"`
	AutoDismiss    *bool  `json:"auto-dismiss,omitempty"`
}

func (BlockStream) Command() string { return "block-stream" }

// BlockdevMirror starts a job copying Device to Target and then mirroring
// every write ("blockdev-mirror"). When the copy is done the job is "ready"
// (BLOCK_JOB_READY); JobComplete then switches Device's parents to Target,
// JobCancel leaves them on Device with Target a consistent copy.
type BlockdevMirror struct {
	JobID          string   `json:"job-id,omitempty"`
	Device         string   `json:"device"`
	Target         string   `json:"target"`
	Replaces       string   `json:"replaces,omitempty"`
	Sync           SyncMode `json:"sync"`
	Speed          uint64   `json:"speed,omitempty"`
	Granularity    uint64   `json:"granularity,omitempty"`
	BufSize        uint64   `json:"buf-size,omitempty"`
	OnSourceError  string   `json:"on-source-error,omitempty"`
	OnTargetError  string   `json:"on-target-error,omitempty"`
	FilterNodeName string   `json:"filter-node-name,omitempty"`
	// CopyMode "write-blocking" makes guest writes wait for the target, so
	// that the job converges under heavy writes; default "background".
	CopyMode     string `json:"copy-mode,omitempty"`
	AutoFinalize *bool  `json:"auto-finalize,omitempty"`
	AutoDismiss  *bool  `json:"auto-dismiss,omitempty"`
}

func (BlockdevMirror) Command() string { return "blockdev-mirror" }

// BlockJobCancel cancels a block job by its id ("block-job-cancel"). A
// ready mirror cancelled without Force completes without switching over.
type BlockJobCancel struct {
	Device string `json:"device"`
	Force  bool   `json:"force,omitempty"`
}

func (BlockJobCancel) Command() string { return "block-job-cancel" }

// BlockJobComplete completes a ready mirror ("block-job-complete").
type BlockJobComplete struct {
	Device string `json:"device"`
}

func (BlockJobComplete) Command() string { return "block-job-complete" }

// JobComplete completes a ready job, as BlockJobComplete ("job-complete").
type JobComplete struct {
	ID string `json:"id"`
}

func (JobComplete) Command() string { return "job-complete" }

// JobCancel cancels a job ("job-cancel"); a ready mirror then ends without
// switching over.
type JobCancel struct {
	ID string `json:"id"`
}

func (JobCancel) Command() string { return "job-cancel" }

// JobFinalize finalizes a pending job started with AutoFinalize false
// ("job-finalize").
type JobFinalize struct {
	ID string `json:"id"`
}

func (JobFinalize) Command() string { return "job-finalize" }

// JobDismiss removes a concluded job started with AutoDismiss false
// ("job-dismiss").
type JobDismiss struct {
	ID string `json:"id"`
}

func (JobDismiss) Command() string { return "job-dismiss" }

// QueryJobs lists the jobs ("query-jobs").
type QueryJobs struct{}

func (QueryJobs) Command() string { return "query-jobs" }
func (QueryJobs) returns(*[]Job)  {}

// JobStatus is a job's state.
type JobStatus string

const (
	JobCreated   JobStatus = "created"
	JobRunning   JobStatus = "running"
	JobPaused    JobStatus = "paused"
	JobReady     JobStatus = "ready" // a mirror copied everything and mirrors writes
	JobStandby   JobStatus = "standby"
	JobWaiting   JobStatus = "waiting"
	JobPending   JobStatus = "pending" // waiting for JobFinalize
	JobAborting  JobStatus = "aborting"
	JobConcluded JobStatus = "concluded" // done; waiting for JobDismiss
	JobNull      JobStatus = "null"      // gone
)

// Job is one entry of query-jobs.
type Job struct {
	ID              string    `json:"id"`
	Type            string    `json:"type"` // "stream", "mirror", "backup", "commit", ...
	Status          JobStatus `json:"status"`
	CurrentProgress uint64    `json:"current-progress"`
	TotalProgress   uint64    `json:"total-progress"`
	// Error says why a concluded job failed; empty when it succeeded.
	Error string `json:"error,omitempty"`
}

// QueryNamedBlockNodes lists the block nodes ("query-named-block-nodes").
// Flat leaves out each node's backing image details.
type QueryNamedBlockNodes struct {
	Flat bool `json:"flat,omitempty"`
}

func (QueryNamedBlockNodes) Command() string      { return "query-named-block-nodes" }
func (QueryNamedBlockNodes) returns(*[]BlockNode) {}

// BlockNode is one node ("BlockDeviceInfo").
type BlockNode struct {
	NodeName         string        `json:"node-name,omitempty"`
	File             string        `json:"file"` // the file name, or a json: description
	Drv              string        `json:"drv"`  // "qcow2", "file", ...
	RO               bool          `json:"ro"`
	BackingFile      string        `json:"backing_file,omitempty"`
	BackingFileDepth int           `json:"backing_file_depth"`
	Encrypted        bool          `json:"encrypted"`
	DetectZeroes     string        `json:"detect_zeroes"`
	Image            ImageInfo     `json:"image"`
	WriteThreshold   uint64        `json:"write_threshold"`
	DirtyBitmaps     []DirtyBitmap `json:"dirty-bitmaps,omitempty"`
}

// ImageInfo describes a node's image.
type ImageInfo struct {
	Filename            string     `json:"filename"`
	Format              string     `json:"format"`
	DirtyFlag           bool       `json:"dirty-flag,omitempty"`
	ActualSize          uint64     `json:"actual-size,omitempty"`
	VirtualSize         uint64     `json:"virtual-size"`
	ClusterSize         uint64     `json:"cluster-size,omitempty"`
	Encrypted           bool       `json:"encrypted,omitempty"`
	Compressed          bool       `json:"compressed,omitempty"`
	BackingFilename     string     `json:"backing-filename,omitempty"`
	FullBackingFilename string     `json:"full-backing-filename,omitempty"`
	BackingFormat       string     `json:"backing-filename-format,omitempty"`
	BackingImage        *ImageInfo `json:"backing-image,omitempty"`
}

// DirtyBitmap is one dirty bitmap of a node ("BlockDirtyBitmapInfo").
type DirtyBitmap struct {
	Name         string `json:"name,omitempty"`
	Count        uint64 `json:"count"` // dirty bytes
	Granularity  uint64 `json:"granularity"`
	Recording    bool   `json:"recording"`
	Busy         bool   `json:"busy"` // in use by a job or an export
	Persistent   bool   `json:"persistent"`
	Inconsistent bool   `json:"inconsistent,omitempty"` // not saved properly: unusable
}

// QueryBlock lists the guest's block devices ("query-block").
type QueryBlock struct{}

func (QueryBlock) Command() string      { return "query-block" }
func (QueryBlock) returns(*[]BlockInfo) {}

// BlockInfo is one block device as the guest's device sees it.
type BlockInfo struct {
	Device    string `json:"device"` // empty for -blockdev/device_add disks
	QDev      string `json:"qdev,omitempty"`
	Type      string `json:"type"`
	Removable bool   `json:"removable"`
	Locked    bool   `json:"locked"`
	// Inserted is the top node the device writes to; nil for an empty drive.
	Inserted *BlockNode `json:"inserted,omitempty"`
	TrayOpen bool       `json:"tray_open,omitempty"`
	IOStatus string     `json:"io-status,omitempty"` // "ok", "failed", "nospace"
}

// NBDServerStart starts QEMU's NBD server ("nbd-server-start"); exports are
// added with BlockExportAdd.
type NBDServerStart struct {
	Addr           SocketAddress
	TLSCreds       string // a TLSCredsX509 with endpoint "server"
	TLSAuthz       string
	MaxConnections int
}

func (NBDServerStart) Command() string { return "nbd-server-start" }

func (s NBDServerStart) MarshalJSON() ([]byte, error) {
	addr, err := s.Addr.legacy()
	if err != nil {
		return nil, fmt.Errorf("NBD server: %w", err)
	}
	return json.Marshal(struct {
		Addr           json.RawMessage `json:"addr"`
		TLSCreds       string          `json:"tls-creds,omitempty"`
		TLSAuthz       string          `json:"tls-authz,omitempty"`
		MaxConnections int             `json:"max-connections,omitempty"`
	}{addr, s.TLSCreds, s.TLSAuthz, s.MaxConnections})
}

// NBDServerStop stops the NBD server and its exports ("nbd-server-stop").
type NBDServerStop struct{}

func (NBDServerStop) Command() string { return "nbd-server-stop" }

// BlockExportOptions is an export for BlockExportAdd: NBDExport.
type BlockExportOptions interface {
	exportType() string
}

// BlockExportAdd exports a node ("block-export-add").
type BlockExportAdd struct {
	Export BlockExportOptions
}

func (BlockExportAdd) Command() string { return "block-export-add" }

func (b BlockExportAdd) MarshalJSON() ([]byte, error) {
	if b.Export == nil {
		return nil, fmt.Errorf("block-export-add without an export; set Export: %w", errdefs.ErrInvalid)
	}
	return json.Marshal(b.Export)
}

// NBDExport exports a node over the NBD server ("type": "nbd").
type NBDExport struct {
	ID           string `json:"id"`
	NodeName     string `json:"node-name"`
	Writable     bool   `json:"writable,omitempty"`
	Writethrough bool   `json:"writethrough,omitempty"`
	// Name is what clients ask for; QEMU uses NodeName when empty.
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	// Bitmaps are offered as "qemu:dirty-bitmap:NAME" metadata contexts: a
	// bitmap of the exported node or one of its backing nodes.
	Bitmaps []BitmapRef `json:"bitmaps,omitempty"`
	// AllocationDepth offers "qemu:allocation-depth".
	AllocationDepth bool `json:"allocation-depth,omitempty"`
}

func (NBDExport) exportType() string { return "nbd" }

func (e NBDExport) MarshalJSON() ([]byte, error) {
	type plain NBDExport
	return withTag("type", "nbd", plain(e))
}

// BlockExportDel removes an export ("block-export-del"). Mode "hard" drops
// connected clients; the default "safe" fails while any is connected. The
// export is gone once query-block-exports no longer lists it.
type BlockExportDel struct {
	ID   string `json:"id"`
	Mode string `json:"mode,omitempty"`
}

func (BlockExportDel) Command() string { return "block-export-del" }

// QueryBlockExports lists the exports ("query-block-exports").
type QueryBlockExports struct{}

func (QueryBlockExports) Command() string        { return "query-block-exports" }
func (QueryBlockExports) returns(*[]BlockExport) {}

// BlockExport is one export ("BlockExportInfo").
type BlockExport struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	NodeName     string `json:"node-name"`
	ShuttingDown bool   `json:"shutting-down"`
}
