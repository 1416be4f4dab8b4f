package backuprepo

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
)

// chainRepo is a repository with one VM's full backup and two incrementals.
func chainRepo(t *testing.T) (*Repo, *vm, []*Backup) {
	t.Helper()
	rng := rand.New(rand.NewPCG(21, 22))
	r := newRepo(t)
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 128<<10, 4<<10)}}
	full := v.backup(t, r, Full, "", t0)
	v.disks[0].scribble(rng, 6)
	i1 := v.backup(t, r, Incremental, full.ID, t0.Add(time.Hour))
	v.disks[0].scribble(rng, 6)
	i2 := v.backup(t, r, Incremental, i1.ID, t0.Add(2*time.Hour))
	return r, v, []*Backup{full, i1, i2}
}

// blockOf returns a block that backup b's own map names, and its index.
func blockOf(t *testing.T, r *Repo, b *Backup) (packstore.Hash, int64) {
	t.Helper()
	es, err := r.readMap(b, &b.Disks[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !e.Hash.IsZero() {
			return e.Hash, e.Index
		}
	}
	t.Fatal("no data block")
	return packstore.Hash{}, 0
}

// verifyFails runs Verify and checks that it reports a problem whose message
// holds each of want.
func verifyFails(t *testing.T, r *Repo, id string, want ...string) *Report {
	t.Helper()
	rep, err := r.Verify(context.Background(), id, nil)
	if !errors.Is(err, ErrDamaged) || !errdefs.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("verify: %v, want a damaged repository", err)
	}
	for _, p := range rep.Problems {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(p.Message, w)
		}
		if ok {
			return rep
		}
	}
	t.Fatalf("verify found %+v; want a problem saying %q", rep.Problems, want)
	return nil
}

func TestVerifyHealthy(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	var last, total int64
	rep, err := r.Verify(context.Background(), "", func(done, tot int64) { last, total = done, tot })
	if err != nil || rep.Backups != 3 || rep.Blocks == 0 || last != total || total != rep.Bytes {
		t.Fatalf("verify of a healthy repository: %+v, %v (progress %d/%d)", rep, err, last, total)
	}
	if rep, err := r.Verify(context.Background(), bs[2].ID, nil); err != nil || rep.Backups != 1 {
		t.Fatalf("verify of one backup: %+v, %v", rep, err)
	}
	if _, err := r.Verify(context.Background(), "20200101T000000Z-000000", nil); !errdefs.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("verify of an unknown backup: %v", err)
	}
}

func TestVerifyFindsAFlippedByte(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	h, idx := blockOf(t, r, bs[0])
	damageBlock(t, r, h)
	verifyFails(t, r, "", "block "+h.String(), "is damaged", "hv backup verify --repair")
	// Verifying the full finds it and names where it is used.
	verifyFails(t, r, bs[0].ID, h.String(), "block "+strconv.FormatInt(idx, 10))
	// A restore that needs it fails rather than restore wrong bytes.
	err := r.Restore(context.Background(), bs[0].ID, "system", make(memDisk, 128<<10), RestoreOptions{})
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), h.String()) {
		t.Fatalf("restore through a damaged block: %v", err)
	}

	// The documented repair: Repair forgets the block; the next backup of
	// the same data stores it again.
	rep, err := r.Repair(context.Background(), nil)
	if !errors.Is(err, ErrDamaged) || !slices.Equal(rep.Repaired, []string{h.String()}) {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	verifyFails(t, r, "", "block "+h.String(), "is missing")
	rng := rand.New(rand.NewPCG(21, 22)) // the same disk as chainRepo's full
	v := &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 128<<10, 4<<10)}}
	again := v.backup(t, r, Full, "", t0.Add(5*time.Hour))
	if again.Stats.NewBlocks != 1 {
		t.Fatalf("the full after the repair stored %d blocks, want the one forgotten", again.Stats.NewBlocks)
	}
	mustVerify(t, r)
	checkRestores(t, r, bs[0].ID, v.snapshot())
	if rep, err := r.Repair(context.Background(), nil); err != nil || len(rep.Repaired) != 0 {
		t.Fatalf("repair of a healthy repository: %+v, %v", rep, err)
	}
}

// A pack that is gone or cut short: its blocks are missing.
func TestVerifyFindsAMissingBlock(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	h, _ := blockOf(t, r, bs[1])
	path, off, _ := blockAt(t, r, h)
	if err := os.Truncate(path, off+1); err != nil {
		t.Fatal(err)
	}
	rep := verifyFails(t, r, "", "block "+h.String(), "is missing", "ends before it")
	if rep.Problems[0].Backup == "" {
		t.Fatalf("the problem names no backup: %+v", rep.Problems[0])
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, r, "", "block "+h.String(), "is missing: its pack "+path+" is gone")
}

// A damaged index: verify says which, and the blocks it lists are missing.
func TestVerifyFindsADamagedIndex(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	h, _ := blockOf(t, r, bs[2])
	path, _, _ := blockAt(t, r, h)
	index := strings.TrimSuffix(path, ".pack") + ".idx"
	data, _ := os.ReadFile(index)
	data[16] ^= 1 // the first record, after the magic and the pack's size
	os.WriteFile(index, data, 0o600)
	verifyFails(t, r, "", index, "is not a valid pack index", "checksum")
	verifyFails(t, r, "", "block "+h.String(), "is missing")
}

func TestVerifyFindsAMissingParent(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	// Someone moved the first incremental out of the repository.
	if err := os.Rename(r.backupDir(bs[1].ID), filepath.Join(t.TempDir(), "moved")); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, r, "", bs[1].ID+", the parent of "+bs[2].ID+", is missing", "take a full backup of VM web")
	verifyFails(t, r, bs[2].ID, "is missing")
	if rep, err := r.Verify(context.Background(), bs[0].ID, nil); err != nil {
		t.Fatalf("the full is still whole: %+v, %v", rep, err)
	}
	err := r.Restore(context.Background(), bs[2].ID, "system", make(memDisk, 128<<10), RestoreOptions{})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("restore of a broken chain: %v", err)
	}
	// A new incremental on a broken chain is refused at Begin.
	v := &vm{name: "web", disks: []*vdisk{{name: "system", bs: 4 << 10, data: make([]byte, 128<<10)}}}
	if _, err := r.Begin(v.meta(Incremental, bs[2].ID, t0.Add(3*time.Hour))); !errors.Is(err, ErrDamaged) {
		t.Fatalf("incremental on a broken chain: %v", err)
	}
}

func TestVerifyFindsDamagedManifestsAndMaps(t *testing.T) {
	t.Parallel()
	r, _, bs := chainRepo(t)
	manifest := filepath.Join(r.backupDir(bs[2].ID), manifestFile)
	data, _ := os.ReadFile(manifest)
	os.WriteFile(manifest, []byte(strings.Replace(string(data), `"crash"`, `"application"`, 1)), 0o600)
	verifyFails(t, r, "", manifest, "checksum mismatch", "move "+r.backupDir(bs[2].ID)+" out of the repository")

	mapFile := filepath.Join(r.backupDir(bs[1].ID), bs[1].Disks[0].Map.File)
	m, _ := os.ReadFile(mapFile)
	m[len(m)-1] ^= 1
	os.WriteFile(mapFile, m, 0o600)
	verifyFails(t, r, "", mapFile, "does not match its checksum")

	cfg := filepath.Join(r.backupDir(bs[0].ID), configFile)
	os.Remove(cfg)
	verifyFails(t, r, bs[0].ID, cfg, "configuration is missing")
	if _, err := r.Config(bs[0].ID); !errors.Is(err, ErrDamaged) {
		t.Fatalf("config of a backup whose config is gone: %v", err)
	}
	// List still shows what it can read, and says what it cannot.
	list, err := r.List("")
	if len(list) != 2 || !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), manifest) {
		t.Fatalf("list with a damaged manifest: %v, %v", ids(list), err)
	}
}
