package blockcopy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hvproject/hv/internal/backuprepo"
)

// BenchmarkCopy measures a full copy of a disk of random bytes served by
// qemu-nbd, the engine under hv backup create, in three steps so that each
// one's cost shows: read only (discard), read and hash, and read into a fresh
// backup repository (hash, pack, O_DIRECT writes, commit with fsync).
//
// HV_BENCH_IMAGE names the image to serve (a qcow2, or raw when it ends in
// .raw; make one of 1-2 GiB with head -c 1G /dev/urandom > x.raw and
// qemu-img convert -O qcow2); without it a 256 MiB raw file is made.
// HV_BENCH_REPO_DIR is where the repositories go (default: the test's
// temporary directory). HV_BENCH_DROP_CACHES=1 writes back and drops the page
// cache before each copy (root only), so that every copy reads the disk.
// HV_BENCH_CONNS sets the connections (default DefaultConns).
//
//	go test -run '^$' -bench Copy -benchtime 1x -count 3 ./internal/blockcopy/
func BenchmarkCopy(b *testing.B) {
	img := os.Getenv("HV_BENCH_IMAGE")
	if img == "" {
		img = filepath.Join(b.TempDir(), "disk.raw")
		data := make([]byte, 256<<20)
		rand.Read(data)
		if err := os.WriteFile(img, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	format := "qcow2"
	if filepath.Ext(img) == ".raw" {
		format = "raw"
	}
	sock := serveFormat(b, img, format, "")
	conns, _ := strconv.Atoi(os.Getenv("HV_BENCH_CONNS"))
	repoDir := os.Getenv("HV_BENCH_REPO_DIR")
	if repoDir == "" {
		repoDir = b.TempDir()
	}
	b.Run("discard", func(b *testing.B) {
		benchCopy(b, sock, conns, func(*testing.B, Plan) (Sink, func()) { return discardSink{}, func() {} })
	})
	b.Run("hash", func(b *testing.B) {
		benchCopy(b, sock, conns, func(*testing.B, Plan) (Sink, func()) { return &hashSink{}, func() {} })
	})
	b.Run("repo", func(b *testing.B) {
		benchCopy(b, sock, conns, func(b *testing.B, p Plan) (Sink, func()) { return repoSink(b, repoDir, p) })
	})
}

// benchCopy copies the export into the sink that mk makes, b.N times, and
// reports the throughput in MiB/s, commit included.
func benchCopy(b *testing.B, sock string, conns int, mk func(*testing.B, Plan) (Sink, func())) {
	ctx := context.Background()
	var bytes int64
	var took, committing time.Duration
	for b.Loop() {
		b.StopTimer()
		dropCaches(b)
		b.StartTimer()
		t0 := time.Now()
		src, err := OpenNBD(ctx, Export{Address: sock, Name: "disk"}, backuprepo.DefaultBlockSize, OpenOptions{Conns: conns})
		if err != nil {
			b.Fatal(err)
		}
		sink, commit := mk(b, src.Plan)
		d := &Disk{Name: "disk", Plan: src.Plan, Readers: src.Readers(), Sink: sink}
		st, err := Copy(ctx, []*Disk{d}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		commit()
		committing += time.Since(t1)
		src.Close()
		took += time.Since(t0)
		bytes += st.ReadBytes
	}
	b.SetBytes(bytes / int64(b.N))
	b.ReportMetric(float64(bytes)/(1<<20)/took.Seconds(), "MiB/s")
	b.ReportMetric(committing.Seconds()/float64(b.N), "s-commit/op")
}

func dropCaches(b *testing.B) {
	if os.Getenv("HV_BENCH_DROP_CACHES") != "1" {
		return
	}
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		b.Fatalf("dropping the page cache (needs root): %v", err)
	}
}

// repoSink begins a full backup of one disk in a fresh repository; the
// returned func commits it.
func repoSink(b *testing.B, dir string, p Plan) (Sink, func()) {
	repoDir, err := os.MkdirTemp(dir, "bench-repo")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(repoDir) })
	repo, err := backuprepo.Init(filepath.Join(repoDir, "r"), backuprepo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	w, err := repo.Begin(backuprepo.BackupMeta{VM: "bench", Kind: backuprepo.Full, Consistency: backuprepo.Crash,
		Disks: []backuprepo.DiskMeta{{Name: "disk", Size: p.Size, BlockSize: int(p.BlockSize)}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := w.SetConfig([]byte("{}")); err != nil {
		b.Fatal(err)
	}
	return RepoSink{W: w, Disk: "disk"}, func() {
		if _, err := w.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

type discardSink struct{}

func (discardSink) Put(context.Context, int64, []byte) error { return nil }
func (discardSink) Zero(context.Context, int64, int) error   { return nil }

// hashSink hashes each block as a repository does, and keeps nothing.
type hashSink struct{ sum atomic.Uint64 }

func (s *hashSink) Put(_ context.Context, _ int64, data []byte) error {
	h := sha256.Sum256(data)
	s.sum.Add(uint64(h[0]))
	return nil
}

func (s *hashSink) Zero(context.Context, int64, int) error { return nil }
