// Command backup-client is an example backup tool for hv, written the way a
// third party would write one: plain net/http on hvd's unix socket, and an NBD
// client (hv's internal/nbd here; libnbd or any other would do) to read the
// disks. It keeps one raw image per disk in a directory:
//
//	backup-client -socket /run/hv/hvd.sock -vm web1 -out /srv/backup/web1
//	backup-client -socket /run/hv/hvd.sock -vm web1 -out /srv/backup/web1 -since REF
//
// The first run writes every disk whole, as a sparse file. A run with -since
// (the reference point the previous run printed) copies the previous image and
// writes over it only the extents the disk's dirty bitmap marks changed. The
// last line printed is "reference <ID>": the -since of the next run.
//
// The API is documented in api/openapi.yaml (tag "backups"). In short: POST
// /1.0/vms/{name}/backups opens a point-in-time view of every disk, exported
// over NBD; the tool reads it, then finishes the backup (its ID becomes a
// reference point) or, on any error, aborts it (the previous reference point
// stays valid).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"time"

	"github.com/hvproject/hv/internal/nbd"
)

// The few JSON shapes of hv's API this tool needs (see api/openapi.yaml).
type operation struct {
	ID     string          `json:"id"`
	Status string          `json:"status"` // pending, running, success, failure, cancelled
	Error  string          `json:"error"`
	Result json.RawMessage `json:"result"` // a backup, once a vm.backup operation succeeds
}

type backup struct {
	ID    string       `json:"id"`
	Disks []backupDisk `json:"disks"`
}

type backupDisk struct {
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	Socket      string `json:"socket"` // the NBD server's unix socket
	Export      string `json:"export"`
	Incremental bool   `json:"incremental"`
	FullReason  string `json:"full_reason"`
	DirtyBitmap string `json:"dirty_bitmap"` // NBD meta context, "qemu:dirty-bitmap:..."
}

type extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "backup-client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("backup-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/run/hv/hvd.sock", "hvd's unix socket")
	vm := fs.String("vm", "", "the VM to back up")
	out := fs.String("out", "", "directory of the disk images (DIR/<disk>.img)")
	since := fs.String("since", "", "reference point of the previous backup into -out; none: a full backup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *vm == "" || *out == "" || fs.NArg() > 0 {
		return errors.New("usage: backup-client [-socket S] -vm NAME -out DIR [-since REF]")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	h := newHVD(*socket)
	vmPath := "/1.0/vms/" + url.PathEscape(*vm)

	// 1. Open the backup. "since": null asks for a full backup.
	var req struct {
		Since *string `json:"since"`
	}
	if *since != "" {
		req.Since = since
	}
	var op operation
	if err := h.call(ctx, "POST", vmPath+"/backups", req, &op); err != nil {
		return err
	}
	// It is an operation: long-poll it until it ends (hvd holds each GET
	// for up to "wait", answering as soon as the operation finishes).
	for op.Status == "pending" || op.Status == "running" {
		if err := h.call(ctx, "GET", "/1.0/operations/"+op.ID+"?wait=30s", nil, &op); err != nil {
			return err
		}
	}
	if op.Status != "success" {
		return fmt.Errorf("opening the backup: %s: %s", op.Status, op.Error)
	}
	var b backup
	if err := json.Unmarshal(op.Result, &b); err != nil {
		return fmt.Errorf("the operation's result: %w", err)
	}
	bPath := vmPath + "/backups/" + url.PathEscape(b.ID)

	// From here on, any failure aborts the backup, so the previous reference
	// point stays valid and hvd drops the view at once (it would anyway,
	// after the backup's timeout). A fresh context: ctx may be why we stop.
	defer func() {
		if err != nil {
			actx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if aerr := h.call(actx, "DELETE", bPath, nil, nil); aerr != nil {
				err = fmt.Errorf("%w (and aborting backup %s failed: %v)", err, b.ID, aerr)
			} else {
				fmt.Fprintf(stderr, "backup %s aborted\n", b.ID)
			}
		}
	}()

	// 2. Read every disk.
	for _, d := range b.Disks {
		if err := copyDisk(ctx, h, bPath, d, *out, stderr); err != nil {
			return fmt.Errorf("disk %s: %w", d.Name, err)
		}
	}

	// 3. Everything is stored: finish. The backup's ID is now a reference point.
	var ref struct {
		ID string `json:"id"`
	}
	if err := h.call(ctx, "POST", bPath+"/finish", nil, &ref); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "reference %s\n", ref.ID)
	return nil
}

// copyDisk writes DIR/<disk>.img into a temporary file renamed at the end, so
// that a failure leaves the previous image whole. (If a later disk fails, the
// backup is aborted with this one already renamed: still fine, as the next
// backup from the same reference point rewrites all it changed since.)
func copyDisk(ctx context.Context, h *hvd, bPath string, d backupDisk, dir string, log io.Writer) error {
	contexts := []string{nbd.BaseAllocation}
	if d.Incremental {
		contexts = append(contexts, d.DirtyBitmap)
	}
	c, err := nbd.Dial(ctx, "unix", d.Socket, nbd.Options{Export: d.Export, MetaContexts: contexts})
	if err != nil {
		return err
	}
	defer c.Close()
	if c.Size() != d.Size {
		return fmt.Errorf("the export has %d bytes, the API says %d", c.Size(), d.Size)
	}

	final := filepath.Join(dir, d.Name+".img")
	tmp, err := os.CreateTemp(dir, d.Name+".img.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	if err := tmp.Truncate(d.Size); err != nil { // all holes, reading as zeroes
		return err
	}

	var todo []nbd.Extent
	if !d.Incremental {
		// Full: every extent of base:allocation that may hold data; the
		// holes and zero extents stay holes in the sparse file.
		fmt.Fprintf(log, "%s: full (%s)\n", d.Name, d.FullReason)
		all, err := c.Extents(ctx, nbd.BaseAllocation)
		if err != nil {
			return err
		}
		todo = nbd.Select(all, nbd.StateZero, 0)
	} else {
		// Incremental: start from the previous image...
		if err := copySparse(tmp, final, d.Size); err != nil {
			return fmt.Errorf("the previous backup's image (run without -since for a full backup): %w", err)
		}
		// ...and take the dirty extents from NBD block status.
		all, err := c.Extents(ctx, d.DirtyBitmap)
		if err != nil {
			return err
		}
		todo = nbd.Select(all, nbd.StateDirty, nbd.StateDirty)
		// hvd lists the same extents as JSON; a tool without block status
		// would use only this. Here it is a cross-check.
		var listed []extent
		if err := h.call(ctx, "GET", bPath+"/disks/"+url.PathEscape(d.Name)+"/changes", nil, &listed); err != nil {
			return err
		}
		got := make([]extent, len(todo))
		for i, e := range todo {
			got[i] = extent{e.Offset, e.Length}
		}
		if !slices.Equal(got, listed) {
			return fmt.Errorf("NBD block status marks %v dirty but hvd lists %v as changed", got, listed)
		}
		fmt.Fprintf(log, "%s: incremental, %d changed extents\n", d.Name, len(todo))
	}

	// Copy the extents, 4 MiB at a time. Changed extents are written even
	// when they now read as zeroes: they must overwrite the old data.
	buf := make([]byte, 4<<20)
	for _, e := range todo {
		for off := e.Offset; off < e.End(); {
			p := buf[:min(int64(len(buf)), e.End()-off)]
			if err := c.ReadInto(ctx, p, off); err != nil {
				return err
			}
			if _, err := tmp.WriteAt(p, off); err != nil {
				return err
			}
			off += int64(len(p))
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), final)
}

// copySparse copies the previous image at path into dst, skipping blocks of
// zeroes so that holes stay holes.
func copySparse(dst *os.File, path string, size int64) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || fi.Size() != size {
		return fmt.Errorf("%s: not an image of %d bytes (%v)", path, size, err)
	}
	buf, zero := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := io.ReadFull(src, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// hvd is an HTTP client for hvd's unix socket; the URL's host is ignored.
type hvd struct{ http *http.Client }

func newHVD(socket string) *hvd {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	return &hvd{&http.Client{Transport: &http.Transport{DialContext: dial}}}
}

// call sends body (when not nil) as JSON and decodes a 2xx answer into out
// (when not nil). Any other answer is hvd's {"error": "...", "code": N}.
func (h *hvd) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hv"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
