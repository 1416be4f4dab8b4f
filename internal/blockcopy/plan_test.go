package blockcopy

import (
	"fmt"
	"testing"

	"github.com/hvproject/hv/internal/nbd"
)

type ext = struct{ off, n int64 }

func mk(flags uint32, es ...ext) (out []nbd.Extent) {
	for _, e := range es {
		out = append(out, nbd.Extent{Offset: e.off, Length: e.n, Flags: flags})
	}
	return out
}

// Blocks: rounded out to whole blocks, each once; zero extents cover whole blocks only.
func TestBlockArithmetic(t *testing.T) {
	t.Parallel()
	got := blocksOf(mk(0, ext{0, 1}, ext{100, 10}, ext{1000, 24}, ext{1024, 1}, ext{4000, 96}), 1024, 4096)
	if fmt.Sprint(got) != "[0 1 3]" {
		t.Fatalf("blocksOf %v", got)
	}
	if got := blocksOf(mk(0, ext{0, 4096}), 1024, 4000); fmt.Sprint(got) != "[0 1 2 3]" {
		t.Fatalf("blocksOf the whole disk %v", got)
	}
	if got := blocksOf(mk(0, ext{5000, 10}), 1024, 4000); len(got) != 0 {
		t.Fatalf("blocksOf past the end %v", got)
	}
	zero := mergeRanges(mk(0, ext{0, 512}, ext{512, 512}, ext{2048, 100}))
	if fmt.Sprint(zero) != "[{0 1024 0} {2048 100 0}]" {
		t.Fatalf("mergeRanges %v", zero)
	}
	for _, c := range []struct {
		lo, hi int64
		want   bool
	}{{0, 1024, true}, {0, 1025, false}, {100, 200, true}, {1024, 2048, false}, {2048, 2148, true}, {2048, 2149, false}, {5000, 6000, false}} {
		if covered(zero, c.lo, c.hi) != c.want {
			t.Errorf("covered [%d, %d): %v", c.lo, c.hi, !c.want)
		}
	}
}

func TestPlans(t *testing.T) {
	t.Parallel()
	// A 4.5 KiB disk in 1 KiB blocks: data in [0, 1500), zeros in [1500, 3072), data in [3072, 4608).
	alloc := append(append(mk(0, ext{0, 1500}), mk(nbd.StateZero|nbd.StateHole, ext{1500, 1572})...), mk(0, ext{3072, 1536})...)
	full := PlanFull(alloc, 1024, 4608)
	if fmt.Sprint(full.Read) != "[0 1 3 4]" || len(full.Zeros) != 0 || full.ReadBytes() != 3*1024+512 {
		t.Fatalf("full plan %+v", full)
	}
	// Dirty: block 1 (partly zeros: read), block 2 (all zeros: a zero block), block 4 (the short last).
	dirty := mk(nbd.StateDirty, ext{1024, 2048}, ext{4200, 10})
	inc := PlanChanged(alloc, dirty, 1024, 4608)
	if fmt.Sprint(inc.Read) != "[1 4]" || fmt.Sprint(inc.Zeros) != "[2]" || inc.ChangedBytes() != 2*1024+512 {
		t.Fatalf("incremental plan %+v", inc)
	}
	sp := (&Plan{Size: 10 << 10, BlockSize: 1024, Read: []int64{0, 1, 2, 4, 5, 9}}).spans(2048)
	if fmt.Sprint(sp) != "[{0 2 2048} {2 1 1024} {4 2 2048} {9 1 1024}]" {
		t.Fatalf("spans %v", sp)
	}
}
