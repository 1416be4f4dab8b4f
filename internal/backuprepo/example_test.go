package backuprepo_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hvproject/hv/internal/backuprepo"
)

// A backup tool reads a disk (through NBD, in hv) and hands the repository
// its blocks: for a full backup the non-zero ones, for an incremental those
// the dirty bitmap marks, with ZeroBlock for those that now read as zeros.
func ExampleRepo_Begin() {
	dir, _ := os.MkdirTemp("", "repo")
	defer os.RemoveAll(dir)
	repo, err := backuprepo.Init(filepath.Join(dir, "repo"), backuprepo.Options{})
	if err != nil {
		panic(err)
	}
	const bs = 64 << 10
	disk := make([]byte, 4*bs) // blocks 0 and 2 hold data
	copy(disk[0:], "boot sector")
	copy(disk[2*bs:], "some file")

	w, err := repo.Begin(backuprepo.BackupMeta{
		VM: "web", Kind: backuprepo.Full, Consistency: backuprepo.Application,
		Disks: []backuprepo.DiskMeta{{Name: "system", Size: int64(len(disk)), BlockSize: bs}},
	})
	if err != nil {
		panic(err)
	}
	defer w.Abort() // does nothing after Commit
	for _, i := range []int64{0, 2} {
		if err := w.PutBlock("system", i, disk[i*bs:(i+1)*bs]); err != nil {
			panic(err)
		}
	}
	w.SetConfig([]byte(`{"name":"web"}`))
	full, err := w.Commit()
	if err != nil {
		panic(err)
	}

	// The guest overwrote block 2 and discarded block 0.
	copy(disk[2*bs:], "new content")
	clear(disk[:bs])
	w, err = repo.Begin(backuprepo.BackupMeta{
		VM: "web", Kind: backuprepo.Incremental, Parent: full.ID, Consistency: backuprepo.Crash,
		Disks: []backuprepo.DiskMeta{{Name: "system", Size: int64(len(disk))}},
	})
	if err != nil {
		panic(err)
	}
	defer w.Abort()
	w.PutBlock("system", 2, disk[2*bs:3*bs])
	w.ZeroBlock("system", 0)
	w.SetConfig([]byte(`{"name":"web"}`))
	inc, err := w.Commit()
	if err != nil {
		panic(err)
	}

	out, _ := os.Create(filepath.Join(dir, "system.img"))
	out.Truncate(int64(len(disk)))
	err = repo.Restore(context.Background(), inc.ID, "system", out, backuprepo.RestoreOptions{SkipZeros: true})
	out.Close()
	got, _ := os.ReadFile(filepath.Join(dir, "system.img"))
	fmt.Println(err, string(got[2*bs:2*bs+11]), got[0] == 0, inc.Stats.NewBlocks)
	// Output: <nil> new content true 1
}
