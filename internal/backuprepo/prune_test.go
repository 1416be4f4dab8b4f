package backuprepo

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// history is a repository with backups of two VMs over four days: web has one
// full on day 0 and incrementals at 08:00, 12:00 and 18:00 every day (one
// chain of 12); db has a full and an incremental on day 0.
type history struct {
	r     *Repo
	web   *vm
	db    *vm
	at    map[string]time.Time         // backup id → its time
	snaps map[string]map[string][]byte // backup id → disks at that time
	ids   map[string]string            // "d1-18" → backup id
}

func newHistory(t *testing.T) *history {
	t.Helper()
	rng := rand.New(rand.NewPCG(41, 42))
	h := &history{r: newRepo(t), at: map[string]time.Time{}, snaps: map[string]map[string][]byte{}, ids: map[string]string{}}
	h.web = &vm{name: "web", disks: []*vdisk{newDisk(rng, "system", 96<<10, 4<<10), newDisk(rng, "data", 32<<10, 4<<10)}}
	h.db = &vm{name: "db", disks: []*vdisk{newDisk(rng, "system", 64<<10, 4<<10)}}
	parent := ""
	for day := range 4 {
		for _, hour := range []int{8, 12, 18} {
			at := t0.Add(time.Duration(day*24+hour) * time.Hour)
			kind := Incremental
			if parent == "" {
				kind = Full
			}
			for _, d := range h.web.disks {
				d.scribble(rng, 3)
			}
			b := h.web.backup(t, h.r, kind, parent, at)
			parent = b.ID
			h.at[b.ID], h.snaps[b.ID] = at, h.web.snapshot()
			h.ids[label(day, hour)] = b.ID
		}
	}
	dbFull := h.db.backup(t, h.r, Full, "", t0.Add(time.Hour))
	h.snaps[dbFull.ID] = h.db.snapshot()
	h.db.disks[0].scribble(rng, 3)
	dbInc := h.db.backup(t, h.r, Incremental, dbFull.ID, t0.Add(2*time.Hour))
	h.snaps[dbInc.ID] = h.db.snapshot()
	h.ids["db-full"], h.ids["db-inc"] = dbFull.ID, dbInc.ID
	return h
}

func label(day, hour int) string {
	return "d" + string(rune('0'+day)) + "-" + map[int]string{8: "08", 12: "12", 18: "18"}[hour]
}

func (h *history) idsOf(labels ...string) []string {
	var out []string
	for _, l := range labels {
		out = append(out, h.ids[l])
	}
	slices.Sort(out)
	return out
}

// checkAll restores every backup left and compares it with its snapshot,
// verifies the repository, and checks that every referenced block is there
// and that no more garbage is left than prune leaves in packs on purpose.
func (h *history) checkAll(t *testing.T) {
	t.Helper()
	list, err := h.r.List("")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range list {
		checkRestores(t, h.r, b.ID, h.snaps[b.ID])
		want := []string{configFile, manifestFile}
		for _, d := range b.Disks {
			want = append(want, d.Map.File)
		}
		var got []string
		ents, _ := os.ReadDir(h.r.backupDir(b.ID))
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Fatalf("backup %s's directory holds %v, want %v", b.ID, got, want)
		}
	}
	mustVerify(t, h.r)
	checkGarbage(t, h.r, true)
}

func TestPruneKeepLastAndDaily(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	r := h.r
	now := t0.Add(3*24*time.Hour + 20*time.Hour) // day 3, 20:00
	policy := Policy{KeepLast: 2, KeepDaily: 3, VM: "web"}
	wantKept := h.idsOf("d3-18", "d3-12", "d2-18", "d1-18")
	wantRebased := h.idsOf("d3-12", "d2-18", "d1-18")

	// A dry run says what would happen and changes nothing.
	blocksBefore := storedBlocks(t, r)
	dry := policy
	dry.DryRun = true
	res, err := r.Prune(context.Background(), dry, now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(res.Kept), wantKept) || len(res.Removed) != 8 || !slices.Equal(res.Rebased, wantRebased) || res.FreedBlocks == 0 {
		t.Fatalf("dry run: %+v", res)
	}
	if list, _ := r.List(""); len(list) != 14 || len(storedBlocks(t, r)) != len(blocksBefore) {
		t.Fatalf("the dry run changed the repository: %d backups", len(list))
	}

	res2, err := r.Prune(context.Background(), policy, now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(res2.Kept), wantKept) || !slices.Equal(res2.Removed, res.Removed) ||
		!slices.Equal(res2.Rebased, wantRebased) || res2.FreedBlocks != res.FreedBlocks || res2.FreedBytes != res.FreedBytes {
		t.Fatalf("prune: %+v; the dry run said %+v", res2, res)
	}
	web, _ := r.List("web")
	if got := ids(web); !slices.Equal(got, wantKept) {
		t.Fatalf("web's backups after prune: %v, want %v", got, wantKept)
	}
	if db, _ := r.List("db"); len(db) != 2 {
		t.Fatalf("pruning web touched db: %v", ids(db))
	}
	// The kept chain: d1-18 is now a full, d2-18 rests on it, d3-12 on d2-18.
	get := func(l string) *Backup {
		b, err := r.Get(h.ids[l])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := get("d1-18"); b.Kind != Full || b.Parent != "" || len(b.Merged) != 5 {
		t.Fatalf("d1-18 after prune: kind %s parent %q merged %v", b.Kind, b.Parent, b.Merged)
	}
	if b := get("d2-18"); b.Kind != Incremental || b.Parent != h.ids["d1-18"] || !slices.Equal(b.Merged, []string{h.ids["d2-12"], h.ids["d2-08"]}) {
		t.Fatalf("d2-18 after prune: parent %q merged %v", b.Parent, b.Merged)
	}
	if b := get("d3-12"); b.Parent != h.ids["d2-18"] {
		t.Fatalf("d3-12 after prune: parent %q", b.Parent)
	}
	if b := get("d3-18"); b.Parent != h.ids["d3-12"] || len(b.Merged) != 0 {
		t.Fatalf("d3-18 after prune: parent %q merged %v", b.Parent, b.Merged)
	}
	if n := len(blocksBefore) - len(storedBlocks(t, r)); int64(n) != res2.FreedBlocks {
		t.Fatalf("prune says it freed %d blocks; %d files went", res2.FreedBlocks, n)
	}
	h.checkAll(t)

	// Pruning again changes nothing; backups go on from the newest.
	res3, err := r.Prune(context.Background(), policy, now)
	if err != nil || len(res3.Removed) != 0 || len(res3.Rebased) != 0 || res3.FreedBlocks != 0 {
		t.Fatalf("second prune: %+v, %v", res3, err)
	}
	rng := rand.New(rand.NewPCG(43, 44))
	h.web.disks[0].scribble(rng, 3)
	next := h.web.backup(t, r, Incremental, h.ids["d3-18"], now.Add(time.Hour))
	h.snaps[next.ID] = h.web.snapshot()
	h.checkAll(t)
}

func TestPruneKeepLastOneMakesTheNewestFull(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	res, err := h.r.Prune(context.Background(), Policy{KeepLast: 1}, t0.Add(100*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := h.idsOf("d3-18", "db-inc"); !slices.Equal(sorted(res.Kept), want) || len(res.Removed) != 12 {
		t.Fatalf("keep-last 1 over both VMs: %+v", res)
	}
	for _, l := range []string{"d3-18", "db-inc"} {
		if b, _ := h.r.Get(h.ids[l]); b.Kind != Full || b.Parent != "" {
			t.Fatalf("%s after prune: %+v", l, b)
		}
	}
	h.checkAll(t)
}

func TestPruneKeepDailyOnly(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	// The newest of each of the 2 most recent days with backups.
	res, err := h.r.Prune(context.Background(), Policy{KeepDaily: 2, VM: "web"}, t0.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := h.idsOf("d3-18", "d2-18"); !slices.Equal(sorted(res.Kept), want) {
		t.Fatalf("keep-daily 2: kept %v, want %v", res.Kept, want)
	}
	h.checkAll(t)
}

// A prune cut short at any step leaves a valid repository; the next one finishes.
func TestPruneInterrupted(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"after rebases", "after some removals"} {
		t.Run(step, func(t *testing.T) {
			h := newHistory(t)
			r := h.r
			now := t0.Add(100 * time.Hour)
			policy := Policy{KeepLast: 2, KeepDaily: 3, VM: "web"}
			all, _ := r.loadAll()
			plan, err := r.planPrune(all, policy, now.Location())
			if err != nil {
				t.Fatal(err)
			}
			if err := r.applyRebases(plan); err != nil {
				t.Fatal(err)
			}
			if step == "after some removals" {
				if err := r.removeBackups(context.Background(), plan.removed[:3]); err != nil {
					t.Fatal(err)
				}
				// and one more, half done: moved to staging, not yet deleted
				os.Rename(r.backupDir(plan.removed[3].ID), filepath.Join(r.dir, stagingDir, plan.removed[3].ID+".removed"))
			}
			// The crash. Everything left restores and verifies.
			list, err := r.List("")
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range list {
				checkRestores(t, r, b.ID, h.snaps[b.ID])
			}
			mustVerify(t, r)

			res, err := r.Prune(context.Background(), policy, now)
			if err != nil {
				t.Fatal(err)
			}
			if want := h.idsOf("d3-18", "d3-12", "d2-18", "d1-18"); !slices.Equal(sorted(res.Kept), want) {
				t.Fatalf("the second prune kept %v, want %v", res.Kept, want)
			}
			if ents, _ := os.ReadDir(filepath.Join(r.dir, stagingDir)); len(ents) != 0 {
				t.Fatalf("staging/ holds %d entries", len(ents))
			}
			h.checkAll(t)
		})
	}
}

func TestPrunePolicyIsChecked(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	for _, p := range []Policy{{}, {KeepLast: -1, KeepDaily: 3}, {KeepLast: 1, KeepDaily: -2}} {
		if _, err := r.Prune(context.Background(), p, t0); !errdefs.Is(err, errdefs.ErrInvalid) {
			t.Errorf("policy %+v: %v, want invalid input", p, err)
		}
	}
}

func TestKeepSet(t *testing.T) {
	t.Parallel()
	mk := func(ts ...string) []*Backup {
		var out []*Backup
		for i, s := range ts {
			at, err := time.Parse(time.RFC3339, s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, &Backup{ID: string(rune('a' + i)), Time: at})
		}
		return out
	}
	bs := mk("2026-03-01T23:30:00Z", "2026-03-02T00:30:00Z", "2026-03-02T10:00:00Z", "2026-03-05T10:00:00Z", "2026-03-05T11:00:00Z")
	keys := func(m map[string]bool) string {
		var k []string
		for id := range m {
			k = append(k, id)
		}
		slices.Sort(k)
		return strings.Join(k, "")
	}
	for _, tc := range []struct {
		p    Policy
		loc  *time.Location
		want string
	}{
		{Policy{KeepLast: 2}, time.UTC, "de"},
		{Policy{KeepDaily: 1}, time.UTC, "e"},
		{Policy{KeepDaily: 2}, time.UTC, "ce"},              // days with backups, not calendar days: the gap is skipped
		{Policy{KeepDaily: 3}, time.UTC, "ace"},             // 03-01, 03-02, 03-05
		{Policy{KeepDaily: 9}, time.UTC, "ace"},             // more days than there are
		{Policy{KeepLast: 1, KeepDaily: 2}, time.UTC, "ce"}, // the union
		// Two hours east of UTC, 03-01 23:30Z is already 03-02: b and a share a day.
		{Policy{KeepDaily: 3}, time.FixedZone("EET", 2*3600), "ce"},
	} {
		if got := keys(keepSet(bs, tc.p, tc.loc)); got != tc.want {
			t.Errorf("%+v in %s: kept %q, want %q", tc.p, tc.loc, got, tc.want)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
