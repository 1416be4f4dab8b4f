package tracking

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTripAndDamage(t *testing.T) {
	dir := t.TempDir()
	st, err := Load(dir)
	if err != nil || len(st.References) != 0 {
		t.Fatalf("a VM without a record: %+v, %v", st, err)
	}
	st.Add(Reference{ID: "00000000000000a1", Time: time.Unix(100, 0).UTC(), Consistency: "application", Disks: []string{"root", "data"}})
	if err := st.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Covers("00000000000000a1", "data") || got.Covers("00000000000000a1", "other") || got.Covers("nope", "root") {
		t.Fatalf("coverage after reload: %+v", got)
	}
	// A record edited by hand is refused with the way out.
	path := filepath.Join(dir, FileName)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), "application", "crash", 1)), 0o600)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("a damaged record: %v", err)
	}
}

func TestReferencesAreKeptAndLostPerDisk(t *testing.T) {
	st := &State{}
	var dropped []Reference
	for i := 0; i < KeepReferences+2; i++ {
		dropped = append(dropped, st.Add(Reference{ID: string(rune('a' + i)), Disks: []string{"root", "data"}})...)
	}
	if len(st.References) != KeepReferences || len(dropped) != 2 || dropped[0].ID != "a" || dropped[1].ID != "b" {
		t.Fatalf("kept %d, dropped %+v", len(st.References), dropped)
	}
	if got := st.Bitmaps("data"); len(got) != KeepReferences || got[0] != BitmapName("c") {
		t.Fatalf("bitmaps of data: %v", got)
	}
	st.Lose("data", "written behind hv's back")
	if len(st.Bitmaps("data")) != 0 || len(st.Bitmaps("root")) != KeepReferences {
		t.Fatalf("after losing data: data %v, root %v", st.Bitmaps("data"), st.Bitmaps("root"))
	}
	if why := st.Why("f", "data"); why != "written behind hv's back" {
		t.Fatalf("why data is full: %q", why)
	}
	if why := st.Why("f", "root"); why != "" {
		t.Fatalf("root is tracked, yet: %q", why)
	}
	if why := st.Why("zz", "root"); !strings.Contains(why, "not tracked") {
		t.Fatalf("unknown reference: %q", why)
	}
	if why := st.Why("", "root"); !strings.Contains(why, "full backup was asked") {
		t.Fatalf("no reference: %q", why)
	}
	// A new reference point tracks the disk again and forgets the loss.
	st.Add(Reference{ID: "g", Disks: []string{"root", "data"}})
	if st.Lost["data"] != "" || st.Why("g", "data") != "" {
		t.Fatalf("after a new reference point: lost %q, why %q", st.Lost["data"], st.Why("g", "data"))
	}
	if why := st.Why("f", "data"); !strings.Contains(why, "not tracked at reference point f") {
		t.Fatalf("an older reference point the disk lost: %q", why)
	}
	if r := st.Remove("g"); r == nil || st.Reference("g") != nil || st.Remove("g") != nil {
		t.Fatalf("remove: %+v", r)
	}
}

func TestStampsTellWritesBehindHVsBack(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "data.qcow2")
	os.WriteFile(img, []byte("image"), 0o600)
	st := &State{}
	if why := st.CheckStamp("data", img); !strings.Contains(why, "did not see its QEMU close") {
		t.Fatalf("no stamp: %q", why)
	}
	if err := st.SetStamp("data", img); err != nil {
		t.Fatal(err)
	}
	if why := st.CheckStamp("data", img); why != "" {
		t.Fatalf("untouched image: %q", why)
	}
	// The same size, a later modification time: written in place.
	later := time.Now().Add(time.Second)
	os.WriteFile(img, []byte("IMAGE"), 0o600)
	os.Chtimes(img, later, later)
	if why := st.CheckStamp("data", img); !strings.Contains(why, "behind hv's back") {
		t.Fatalf("written image: %q", why)
	}
	// Another file in its place (a copy put back) is no match either.
	st.SetStamp("data", img)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("IMAGE"), 0o600)
	os.Chtimes(other, later, later)
	os.Rename(other, img)
	if why := st.CheckStamp("data", img); why == "" {
		t.Fatal("a replaced file passed its stamp")
	}
	os.Remove(img)
	if why := st.CheckStamp("data", img); !strings.Contains(why, "cannot be read") {
		t.Fatalf("missing image: %q", why)
	}
}

func TestBitmapNames(t *testing.T) {
	if ReferenceOf(BitmapName("abc")) != "abc" || ReferenceOf(TempBitmapName("abc")) != "" || ReferenceOf("user-bitmap") != "" {
		t.Fatal("ReferenceOf")
	}
	if !IsOurs(TempBitmapName("x")) || !IsOurs(BitmapName("x")) || IsOurs("backup-tool-bitmap") {
		t.Fatal("IsOurs")
	}
}

func TestDropKeepsOlderReferences(t *testing.T) {
	st := &State{}
	st.Add(Reference{ID: "old", Disks: []string{"root"}})
	st.Add(Reference{ID: "new", Disks: []string{"root"}})
	st.Drop("new", "root", "applied a checkpoint from before it")
	if st.Why("old", "root") != "" {
		t.Fatalf("the older reference point was lost too: %q", st.Why("old", "root"))
	}
	if why := st.Why("new", "root"); why != "applied a checkpoint from before it" {
		t.Fatalf("why the newer one is gone: %q", why)
	}
}

// FuzzLoad: whatever tracking.json holds, Load returns a record or an error
// that says how to start afresh, never a panic.
func FuzzLoad(f *testing.F) {
	st := &State{}
	st.Add(Reference{ID: "0123456789abcdef", Disks: []string{"root"}})
	st.Stamps = map[string]Stamp{"root": {File: "root.qcow2", Size: 1}}
	dir := f.TempDir()
	if err := st.Save(dir); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	f.Add(good)
	f.Add([]byte(`{"tracking_version":1,"checksum":"x","tracking":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, FileName), data, 0o600)
		st, err := Load(dir)
		if err != nil {
			if !strings.Contains(err.Error(), "remove") && !strings.Contains(err.Error(), "newer") {
				t.Fatalf("an error without the way out: %v", err)
			}
			return
		}
		for _, r := range st.References {
			st.Bitmaps(r.ID)
			st.Why(r.ID, "root")
		}
	})
}
