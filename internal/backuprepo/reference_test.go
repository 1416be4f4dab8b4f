package backuprepo

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// The reference point a backup ends at is kept in its manifest, survives a
// prune that rebases the backup, and is absent from manifests that have none
// (a reader of version 1 without the field sees nothing new).
func TestReferenceIsKept(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	data := bytes.Repeat([]byte{7}, 3*MinBlockSize)
	begin := func(kind Kind, parent, ref string, at time.Time) *Backup {
		t.Helper()
		w, err := r.Begin(BackupMeta{VM: "web", VMID: "id-web", Kind: kind, Parent: parent, Consistency: Crash, Reference: ref, Time: at,
			Disks: []DiskMeta{{Name: "root", Size: int64(len(data)), BlockSize: MinBlockSize}}})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if err := w.PutBlock("root", 1, data[MinBlockSize:2*MinBlockSize]); err != nil {
			t.Fatal(err)
		}
		w.SetConfig([]byte("{}"))
		b, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	plain := begin(Full, "", "", t0)
	full := begin(Full, "", "hvb-1", t0.Add(time.Hour))
	inc := begin(Incremental, full.ID, "hvb-2", t0.Add(2*time.Hour))

	raw, err := os.ReadFile(filepath.Join(r.backupDir(plain.ID), manifestFile))
	if err != nil || bytes.Contains(raw, []byte("reference")) {
		t.Fatalf("a backup without a reference names one: %s (%v)", raw, err)
	}
	for id, want := range map[string]string{plain.ID: "", full.ID: "hvb-1", inc.ID: "hvb-2"} {
		if b, err := r.Get(id); err != nil || b.Reference != want {
			t.Fatalf("backup %s: reference %q (%v), want %q", id, b.Reference, err, want)
		}
	}
	raw, _ = os.ReadFile(filepath.Join(r.backupDir(inc.ID), manifestFile))
	var env struct {
		Backup map[string]any `json:"backup"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || env.Backup["reference"] != "hvb-2" {
		t.Fatalf("manifest body %v (%v): no \"reference\": \"hvb-2\"", env.Backup, err)
	}

	res, err := r.Prune(t.Context(), Policy{KeepLast: 1}, t0.Add(3*time.Hour))
	if err != nil || len(res.Rebased) != 1 {
		t.Fatalf("prune: %+v, %v", res, err)
	}
	if b, err := r.Get(inc.ID); err != nil || b.Reference != "hvb-2" || b.Kind != Full {
		t.Fatalf("after prune: %+v, %v", b, err)
	}
	mustVerify(t, r)

	for _, bad := range []string{strings.Repeat("x", maxReference+1), "a\nb", "\xff"} {
		_, err := r.Begin(BackupMeta{VM: "web", Kind: Full, Consistency: Crash, Reference: bad,
			Disks: []DiskMeta{{Name: "root", Size: 4096}}})
		if !errdefs.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "reference") {
			t.Fatalf("reference %q: %v", bad, err)
		}
	}
}
