package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/api"
)

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// guestFiles is a fake of hvd's file routes, storing files in memory.
type guestFiles struct {
	mu    sync.Mutex
	files map[string][]byte
	modes map[string]string
	// cut makes downloads stop after this many bytes; badSum sends a wrong checksum;
	// noSum sends none; withLength sends a Content-Length, which leaves no room for the
	// trailer; lieSize answers uploads with a wrong size.
	cut            int
	badSum, noSum  bool
	withLength     bool
	lieSize        bool
	uploadsStarted int
}

func (g *guestFiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if r.URL.Path != "/1.0/vms/web1/files" {
		writeJSON(w, 404, api.Error{Error: "VM not found", Code: 404})
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		g.uploadsStarted++
		if r.ContentLength < 0 {
			writeJSON(w, 400, api.Error{Error: "send a Content-Length", Code: 400})
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		g.files[path], g.modes[path] = b, r.URL.Query().Get("mode")
		info := api.FileInfo{Path: path, Size: int64(len(b)), SHA256: sha(b)}
		if g.lieSize {
			info.Size--
		}
		writeJSON(w, 200, info)
	case http.MethodGet:
		b, ok := g.files[path]
		if !ok {
			writeJSON(w, 404, api.Error{Error: path + ": no such file in the guest", Code: 404})
			return
		}
		w.Header().Set("Trailer", checksumTrailer)
		if g.withLength {
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		} else {
			w.Header().Set(sizeHeader, strconv.Itoa(len(b)))
		}
		w.WriteHeader(200)
		if g.cut > 0 {
			w.Write(b[:g.cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(b)
		switch {
		case g.badSum:
			w.Header().Set(checksumTrailer, sha([]byte("something else")))
		case !g.noSum:
			w.Header().Set(checksumTrailer, sha(b))
		}
	}
}

func newGuestFiles() *guestFiles {
	return &guestFiles{files: map[string][]byte{}, modes: map[string]string{}}
}

func TestUploadFile(t *testing.T) {
	g := newGuestFiles()
	c := serve(t, g)
	data := bytes.Repeat([]byte("0123456789abcdef"), 100000) // 1.6 MB: several reads
	var last, calls int64
	info, err := c.UploadFile(context.Background(), "web1", "/opt/app bin", 0o755, bytes.NewReader(data), int64(len(data)),
		func(done, total int64) {
			if total != int64(len(data)) || done < last {
				t.Errorf("progress %d/%d after %d", done, total, last)
			}
			last = done
			calls++
		})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) || info.SHA256 != sha(data) || last != int64(len(data)) || calls < 2 {
		t.Fatalf("info %+v, progress %d in %d calls", info, last, calls)
	}
	if !bytes.Equal(g.files["/opt/app bin"], data) || g.modes["/opt/app bin"] != "0755" {
		t.Fatalf("stored %d bytes, mode %q", len(g.files["/opt/app bin"]), g.modes["/opt/app bin"])
	}

	// Empty files go too, and setuid is carried over.
	if _, err := c.UploadFile(context.Background(), "web1", "/empty", 0o644|1<<23, strings.NewReader(""), 0, nil); err != nil {
		t.Fatal(err)
	}
	if g.modes["/empty"] != "4644" {
		t.Fatalf("setuid mode %q", g.modes["/empty"])
	}
}

func TestUploadFileFailures(t *testing.T) {
	g := newGuestFiles()
	c := serve(t, g)
	ctx := context.Background()

	// The source has fewer bytes than announced.
	_, err := c.UploadFile(ctx, "web1", "/x", 0o644, strings.NewReader("abc"), 10, nil)
	var te *TransferError
	if !errors.As(err, &te) || te.Done != 3 || te.Total != 10 || !strings.Contains(err.Error(), "the source ended early") {
		t.Fatalf("short source: %v", err)
	}

	// The guest got something else than what was sent.
	g.lieSize = true
	_, err = c.UploadFile(ctx, "web1", "/x", 0o644, strings.NewReader("abc"), 3, nil)
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "the guest file has 2 bytes") {
		t.Fatalf("wrong answer: %v", err)
	}

	// A refusal comes before the body: the file is not sent at all.
	big := bytes.Repeat([]byte{1}, 8<<20)
	_, err = c.UploadFile(ctx, "nope", "/x", 0o644, bytes.NewReader(big), int64(len(big)), nil)
	if !IsNotFound(err) {
		t.Fatalf("unknown VM: %v", err)
	}
}

func TestDownloadFile(t *testing.T) {
	g := newGuestFiles()
	data := bytes.Repeat([]byte("hv"), 300000)
	g.files["/var/log/syslog"] = data
	c := serve(t, g)
	ctx := context.Background()

	var buf bytes.Buffer
	var last int64
	info, err := c.DownloadFile(ctx, "web1", "/var/log/syslog", &buf, func(done, total int64) {
		if total != int64(len(data)) {
			t.Errorf("total %d", total)
		}
		last = done
	})
	if err != nil || !bytes.Equal(buf.Bytes(), data) || info.SHA256 != sha(data) || info.Size != int64(len(data)) || last != info.Size {
		t.Fatalf("info %+v, %d bytes, progress %d, %v", info, buf.Len(), last, err)
	}

	var te *TransferError
	g.cut = 1000
	_, err = c.DownloadFile(ctx, "web1", "/var/log/syslog", io.Discard, nil)
	if !errors.As(err, &te) || te.Done != 1000 || te.Total != int64(len(data)) || !strings.Contains(err.Error(), "broke off after 1000 of 600000 bytes") {
		t.Fatalf("short body: %v", err)
	}

	g.cut, g.badSum = 0, true
	_, err = c.DownloadFile(ctx, "web1", "/var/log/syslog", io.Discard, nil)
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("bad checksum: %v", err)
	}

	g.badSum, g.noSum = false, true
	_, err = c.DownloadFile(ctx, "web1", "/var/log/syslog", io.Discard, nil)
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "no X-Hv-Sha256 checksum") {
		t.Fatalf("no checksum: %v", err)
	}

	// A trailer cannot follow a body sized by Content-Length: the checksum is lost.
	g.noSum, g.withLength = false, true
	_, err = c.DownloadFile(ctx, "web1", "/var/log/syslog", io.Discard, nil)
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "no X-Hv-Sha256 checksum") {
		t.Fatalf("Content-Length: %v", err)
	}
	g.cut = 10
	_, err = c.DownloadFile(ctx, "web1", "/var/log/syslog", io.Discard, nil)
	if !errors.As(err, &te) || te.Done != 10 || !strings.Contains(err.Error(), "broke off after 10 of 600000 bytes") {
		t.Fatalf("short body with Content-Length: %v", err)
	}

	if _, err = c.DownloadFile(ctx, "web1", "/nope", io.Discard, nil); !IsNotFound(err) || err.Error() != "/nope: no such file in the guest" {
		t.Fatalf("missing file: %v", err)
	}
}
