package nbd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// These tests run Debian's qemu-img, qemu-io and qemu-nbd (package
// qemu-utils, in scripts/deps.txt). They fail, not skip, without them.

const (
	kib = 1 << 10
	mib = 1 << 20
)

// tool finds a QEMU tool or fails the test.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (Debian package qemu-utils, in scripts/deps.txt): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// write is one qemu-io write of a byte pattern, also applied to the model.
type write struct {
	off, n  int
	pattern byte
}

var (
	// Written before the bitmap exists: allocated, not dirty.
	writesBefore = []write{{0, 64 * kib, 0xaa}, {1 * mib, 128 * kib, 0xbb}}
	// Written after bitmap b0 was added and enabled: dirty, at its 64 KiB
	// granularity: [2M, 2M+64K) and [3M, 3M+128K) (the second write spans
	// two granules).
	writesAfter = []write{{2 * mib, 4 * kib, 0xcc}, {3*mib + 60*kib, 8 * kib, 0xdd}}
	wantDirty   = []Extent{{2 * mib, 64 * kib, StateDirty}, {3 * mib, 128 * kib, StateDirty}}
	// The qcow2 clusters (64 KiB) never written: holes that read as zeroes.
	wantHoles = []Extent{{64 * kib, mib - 64*kib, 0}, {mib + 128*kib, mib - 128*kib, 0}, {2*mib + 64*kib, mib - 64*kib, 0}, {3*mib + 128*kib, mib - 128*kib, 0}}
)

func qemuIO(t *testing.T, img string, model []byte, ws []write) {
	args := []string{"-f", "qcow2"}
	for _, w := range ws {
		args = append(args, "-c", fmt.Sprintf("write -P %#x %d %d", w.pattern, w.off, w.n))
		for i := w.off; i < w.off+w.n; i++ {
			model[i] = w.pattern
		}
	}
	run(t, "qemu-io", append(args, img)...)
}

// testImage makes a 4 MiB qcow2 with a persistent dirty bitmap b0 added
// between two sets of writes, and returns it with its expected contents.
func testImage(t *testing.T) (string, []byte) {
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	model := make([]byte, 4*mib)
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", img, "4M")
	qemuIO(t, img, model, writesBefore)
	run(t, "qemu-img", "bitmap", "--add", "--enable", "-g", "64K", "-f", "qcow2", img, "b0")
	qemuIO(t, img, model, writesAfter)
	return img, model
}

// syncBuffer collects qemu-nbd's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve runs qemu-nbd on a unix socket until the test ends and returns the
// socket's path once it accepts connections.
func serve(t *testing.T, args ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command(tool(t, "qemu-nbd"), append([]string{"-k", sock}, args...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("qemu-nbd output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case <-exited:
			t.Fatalf("qemu-nbd %q exited early: %v\n%s", args, cmd.ProcessState, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not create %s within 10s\n%s", sock, out.String())
		}
	}
}

// dial connects, retrying briefly while qemu-nbd's socket exists but does
// not listen yet.
func dial(t *testing.T, ctx context.Context, sock string, opts Options) (*Client, error) {
	for {
		c, err := Dial(ctx, "unix", sock, opts)
		if err != nil && strings.Contains(err.Error(), "connection refused") && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return c, err
	}
}

func TestQEMUNBD(t *testing.T) {
	img, model := testImage(t)
	sock := serve(t, "--read-only", "--persistent", "--shared=4", "-B", "b0", "-A", "-x", "exp", "-f", "qcow2", img)
	ctx := testCtx(t)
	all := []string{BaseAllocation, DirtyBitmap("b0"), AllocationDepth}
	c, err := dial(t, ctx, sock, Options{Export: "exp", MetaContexts: all})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exp := c.Export()
	t.Logf("qemu-nbd export: %+v", exp)
	if exp.Size != 4*mib || !exp.Flags.ReadOnly() || !exp.Structured || exp.Name != "exp" || !reflect.DeepEqual(exp.MetaContexts, all) || exp.MinBlock == 0 {
		t.Errorf("export %+v", exp)
	}

	// Read: the whole disk in one call, and pieces across data and holes.
	got, err := c.Read(ctx, 0, 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("the disk read back differs from what qemu-io wrote (first difference at %d)", firstDiff(got, model))
	}
	for _, r := range [][2]int{{64*kib - 3, 7}, {3*mib + 60*kib - 1, 8*kib + 2}, {1, 2*mib - 1}, {4*mib - 1, 1}} {
		got, err := c.Read(ctx, int64(r[0]), r[1])
		if err != nil || !bytes.Equal(got, model[r[0]:r[0]+r[1]]) {
			t.Errorf("read %d at %d: %v", r[1], r[0], err)
		}
	}

	// The bitmap: exactly the granules written after it was enabled.
	ext, err := c.Extents(ctx, DirtyBitmap("b0"))
	if err != nil {
		t.Fatal(err)
	}
	if dirty := Select(ext, StateDirty, StateDirty); !reflect.DeepEqual(dirty, wantDirty) {
		t.Errorf("dirty extents %v, want %v (all: %v)", dirty, wantDirty, ext)
	}
	checkCovers(t, "bitmap", ext, 4*mib)
	part, err := c.BlockStatus(ctx, 3*mib+100*kib, 100*kib, DirtyBitmap("b0"))
	if want := []Extent{{3*mib + 100*kib, 28 * kib, StateDirty}, {3*mib + 128*kib, 72 * kib, 0}}; err != nil || !reflect.DeepEqual(part, want) {
		t.Errorf("BlockStatus(bitmap) = %v, %v; want %v", part, err, want)
	}

	// base:allocation: the clusters never written are holes reading as
	// zeroes; every written byte is in an extent that is neither.
	ext, err = c.Extents(ctx, BaseAllocation)
	if err != nil {
		t.Fatal(err)
	}
	checkCovers(t, "base:allocation", ext, 4*mib)
	var holes []Extent
	for _, e := range Select(ext, StateHole, StateHole) {
		if e.Flags != StateHole|StateZero {
			t.Errorf("hole %v does not read as zeroes", e)
		}
		if n := len(holes); n > 0 && holes[n-1].End() == e.Offset {
			holes[n-1].Length += e.Length
		} else {
			holes = append(holes, Extent{e.Offset, e.Length, 0})
		}
	}
	if !reflect.DeepEqual(holes, wantHoles) {
		t.Errorf("holes %v, want %v (all: %v)", holes, wantHoles, ext)
	}
	for _, w := range append(append([]write(nil), writesBefore...), writesAfter...) {
		for _, e := range ext {
			if e.Offset < int64(w.off+w.n) && e.End() > int64(w.off) && e.Flags&(StateHole|StateZero) != 0 {
				t.Errorf("written range %d+%d lies in extent %v", w.off, w.n, e)
			}
		}
	}

	// qemu:allocation-depth: 1 (this image) for written clusters, 0 elsewhere.
	ext, err = c.Extents(ctx, AllocationDepth)
	if err != nil {
		t.Fatal(err)
	}
	checkCovers(t, "allocation depth", ext, 4*mib)
	if unalloc := Select(ext, ^uint32(0), 0); !reflect.DeepEqual(unalloc, wantHoles) {
		t.Errorf("unallocated %v, want %v (all %v)", unalloc, wantHoles, ext)
	}
	for _, e := range ext {
		if e.Flags > 1 {
			t.Errorf("depth %d in %v; there is no backing file", e.Flags, e)
		}
	}

	_, err = c.Read(ctx, 4*mib-1, 2)
	wantErr(t, err, errdefs.ErrInvalid, "outside export \"exp\" of 4194304 bytes")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The server is persistent and a connection with fewer contexts works.
	c2, err := dial(t, ctx, sock, Options{Export: "exp"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := c2.Read(ctx, 2*mib, 4*kib); err != nil || !bytes.Equal(got, model[2*mib:2*mib+4*kib]) {
		t.Errorf("second connection: %v", err)
	}
	_, err = c2.BlockStatus(ctx, 0, 1, BaseAllocation)
	wantErr(t, err, errdefs.ErrInvalid, "not negotiated")
}

func TestQEMUNBDRefusals(t *testing.T) {
	img, _ := testImage(t)
	sock := serve(t, "--read-only", "--persistent", "--shared=4", "-B", "b0", "-x", "exp", "-f", "qcow2", img)
	ctx := testCtx(t)
	_, err := dial(t, ctx, sock, Options{Export: "nope"})
	wantErr(t, err, errdefs.ErrNotFound, `nbd: export "nope" not found on the server (NBD_REP_ERR_UNKNOWN`, "list the server's exports")
	t.Log(err)
	_, err = dial(t, ctx, sock, Options{Export: "nope", MetaContexts: []string{BaseAllocation}})
	wantErr(t, err, errdefs.ErrNotFound, `export "nope" not found`)
	_, err = dial(t, ctx, sock, Options{Export: "exp", MetaContexts: []string{DirtyBitmap("b1")}})
	wantErr(t, err, errdefs.ErrNotFound, `did not select metadata context "qemu:dirty-bitmap:b1"`, "qemu-nbd -B b1")
	t.Log(err)
	_, err = dial(t, ctx, sock, Options{Export: "exp", MetaContexts: []string{AllocationDepth}})
	wantErr(t, err, errdefs.ErrNotFound, "qemu-nbd -A")
	_, err = dial(t, ctx, sock, Options{Export: "exp", TLS: &tls.Config{ServerName: "localhost"}})
	wantErr(t, err, errdefs.ErrUnavailable, "the server refused TLS (NBD_REP_ERR_POLICY", "dial without Options.TLS")
	t.Log(err)
	// After every refusal the client aborted politely and the server goes on.
	c, err := dial(t, ctx, sock, Options{Export: "exp", MetaContexts: []string{DirtyBitmap("b0")}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestQEMUNBDTLS(t *testing.T) {
	img, model := testImage(t)
	dir := t.TempDir()
	roots := writeCerts(t, dir)
	sock := serve(t, "--object", "tls-creds-x509,id=tls0,dir="+dir+",endpoint=server,verify-peer=off", "--tls-creds", "tls0",
		"--read-only", "--persistent", "--shared=4", "-B", "b0", "-x", "exp", "-f", "qcow2", img)
	ctx := testCtx(t)
	_, err := dial(t, ctx, sock, Options{Export: "exp"})
	wantErr(t, err, errdefs.ErrUnavailable, "NBD_REP_ERR_TLS_REQD", "dial with Options.TLS set")
	t.Log(err)
	_, err = dial(t, ctx, sock, Options{Export: "exp", TLS: &tls.Config{ServerName: "localhost"}})
	wantErr(t, err, errdefs.ErrUnavailable, "TLS handshake with the server failed", "certificate")
	t.Log(err)

	c, err := dial(t, ctx, sock, Options{Export: "exp", MetaContexts: []string{DirtyBitmap("b0")},
		TLS: &tls.Config{ServerName: "localhost", RootCAs: roots, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Export().TLS {
		t.Error("Export().TLS is false")
	}
	got, err := c.Read(ctx, 0, 4*mib)
	if err != nil || !bytes.Equal(got, model) {
		t.Fatalf("read over TLS: %v", err)
	}
	ext, err := c.Extents(ctx, DirtyBitmap("b0"))
	if err != nil || !reflect.DeepEqual(Select(ext, StateDirty, StateDirty), wantDirty) {
		t.Errorf("dirty extents over TLS: %v, %v", ext, err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

// writeCerts writes a throwaway CA and a server certificate for localhost in
// the layout QEMU's tls-creds-x509 reads, and returns the CA as a pool.
func writeCerts(t *testing.T, dir string) *x509.CertPool {
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey, srvKey := key(), key()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hv nbd test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{
		"ca-cert.pem":     {Type: "CERTIFICATE", Bytes: caDER},
		"server-cert.pem": {Type: "CERTIFICATE", Bytes: srvDER},
		"server-key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

// checkCovers checks that extents tile [0, size) in order.
func checkCovers(t *testing.T, what string, ext []Extent, size int64) {
	t.Helper()
	var at int64
	for _, e := range ext {
		if e.Offset != at || e.Length <= 0 {
			t.Errorf("%s: extent %v does not follow offset %d", what, e, at)
			return
		}
		at = e.End()
	}
	if at != size {
		t.Errorf("%s: extents end at %d, want %d", what, at, size)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
