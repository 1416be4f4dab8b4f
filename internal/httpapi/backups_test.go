package httpapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// filesHost is a fake backups role with a backup's files: b1 of VM web is
// open. It answers nothing else (the embedded interface is nil).
type filesHost struct {
	Backups
	files map[string]string
	short bool // the file ends before its size
}

func (f *filesHost) BackupFiles(name, backup string) ([]api.BackupFile, error) {
	if name != "web" || backup != "b1" {
		return nil, fmt.Errorf("backup %q of VM %s is not open: %w", backup, name, errdefs.ErrNotFound)
	}
	return []api.BackupFile{{Name: "config", File: "config.json", Size: int64(len(f.files["config"]))}}, nil
}

func (f *filesHost) OpenBackupFile(name, backup, file string) (io.ReadCloser, api.BackupFile, error) {
	data, ok := f.files[file]
	if name != "web" || backup != "b1" || !ok {
		return nil, api.BackupFile{}, fmt.Errorf("VM %s has no %s file: %w", name, file, errdefs.ErrNotFound)
	}
	info := api.BackupFile{Name: file, File: file + ".bin", Size: int64(len(data))}
	if f.short {
		data = data[:len(data)/2]
	}
	return io.NopCloser(strings.NewReader(data)), info, nil
}

func TestBackupFilesRoutes(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ops := operation.NewManager(nil, StatusCode)
	h := &filesHost{files: map[string]string{"config": `{"vm":{}}`, "nvram": strings.Repeat("V", 70000)}}
	dir, err := os.MkdirTemp("", "hvapi") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "hvd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(New(Roles{Backups: h}, ops, events.NewBus(log), log))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	c := client.New(filepath.Join(dir, "hvd.sock"))
	ctx := context.Background()

	list, err := c.BackupFiles(ctx, "web", "b1")
	if err != nil || len(list) != 1 || list[0] != (api.BackupFile{Name: "config", File: "config.json", Size: 9}) {
		t.Fatalf("list: %+v, %v", list, err)
	}
	data, info, err := c.BackupFile(ctx, "web", "b1", "nvram", 1<<20)
	if err != nil || string(data) != h.files["nvram"] || info != (api.BackupFile{Name: "nvram", File: "nvram.bin", Size: 70000}) {
		t.Fatalf("nvram: %d bytes, %+v, %v", len(data), info, err)
	}
	if _, _, err := c.BackupFile(ctx, "web", "b1", "nvram", 1000); err == nil || !strings.Contains(err.Error(), "more than the 1000 asked for") {
		t.Fatalf("a file over the limit: %v", err)
	}
	if _, _, err := c.BackupFile(ctx, "web", "b1", "initrd", 1<<20); !client.IsNotFound(err) {
		t.Fatalf("a file the VM lacks: %v", err)
	}
	if _, err := c.BackupFiles(ctx, "web", "b2"); !client.IsNotFound(err) {
		t.Fatalf("files of a backup that is not open: %v", err)
	}
	// A file that ends early cuts the answer short: the client says so.
	h.short = true
	if _, _, err := c.BackupFile(ctx, "web", "b1", "nvram", 1<<20); err == nil {
		t.Fatal("a short file came through whole")
	}

	// A server without the backups role answers 501.
	plain := httptest.NewServer(New(Roles{}, ops, events.NewBus(log), log))
	defer plain.Close()
	resp, err := http.Get(plain.URL + "/1.0/vms/web/backups/b1/files")
	if err != nil || resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("a host without backup files: %v %v", resp, err)
	}
	resp.Body.Close()
}
