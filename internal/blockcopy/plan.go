package blockcopy

import (
	"sort"

	"github.com/hvproject/hv/internal/nbd"
)

// Plan is what to copy of one disk, in blocks of BlockSize bytes (the last
// block is shorter when Size is not a multiple of it).
type Plan struct {
	Size      int64
	BlockSize int64
	Read      []int64 // blocks to read, ascending, each once
	Zeros     []int64 // blocks that read as zeros: recorded, not read
}

// BlockLen is the length of block i.
func (p *Plan) BlockLen(i int64) int { return int(min(p.BlockSize, p.Size-i*p.BlockSize)) }

// ReadBytes is the size of the blocks to read.
func (p *Plan) ReadBytes() int64 {
	var n int64
	for _, i := range p.Read {
		n += int64(p.BlockLen(i))
	}
	return n
}

// ChangedBytes is the size of every block the plan covers: read or zeros.
func (p *Plan) ChangedBytes() int64 {
	n := p.ReadBytes()
	for _, i := range p.Zeros {
		n += int64(p.BlockLen(i))
	}
	return n
}

// spans groups the blocks to read into reads of at most readSize bytes (one
// block at least), each of neighbouring blocks.
func (p *Plan) spans(readSize int) []span {
	var out []span
	for _, i := range p.Read {
		n := p.BlockLen(i)
		if k := len(out) - 1; k >= 0 && out[k].first+int64(out[k].count) == i && out[k].bytes+n <= readSize {
			out[k].count++
			out[k].bytes += n
			continue
		}
		out = append(out, span{first: i, count: 1, bytes: n})
	}
	return out
}

// PlanFull plans a whole disk of size bytes: the blocks that the allocation
// extents (NBD's base:allocation context, ascending) do not say read as
// zeros. Blocks of zeros are left out altogether: a full copy's target
// reads as zeros where nothing was put.
func PlanFull(alloc []nbd.Extent, blockSize, size int64) Plan {
	return Plan{Size: size, BlockSize: blockSize, Read: blocksOf(nbd.Select(alloc, nbd.StateZero, 0), blockSize, size)}
}

// PlanChanged plans the blocks that the dirty extents (a dirty bitmap's
// context, ascending) touch: those that now read as zeros whole, by the
// allocation extents, are Zeros; the others are read.
func PlanChanged(alloc, dirty []nbd.Extent, blockSize, size int64) Plan {
	p := Plan{Size: size, BlockSize: blockSize}
	zero := mergeRanges(nbd.Select(alloc, nbd.StateZero, nbd.StateZero))
	for _, i := range blocksOf(nbd.Select(dirty, nbd.StateDirty, nbd.StateDirty), blockSize, size) {
		if covered(zero, i*blockSize, i*blockSize+int64(p.BlockLen(i))) {
			p.Zeros = append(p.Zeros, i)
		} else {
			p.Read = append(p.Read, i)
		}
	}
	return p
}

// blocksOf lists, ascending and once each, the blocks of size bs that the
// extents (ascending) touch, on a disk of size bytes.
func blocksOf(exts []nbd.Extent, bs, size int64) []int64 {
	var out []int64
	for _, e := range exts {
		if e.Length <= 0 || e.Offset >= size {
			continue
		}
		lo, hi := e.Offset/bs, (min(e.End(), size)-1)/bs
		if n := len(out); n > 0 && out[n-1] >= lo {
			lo = out[n-1] + 1
		}
		for i := lo; i <= hi; i++ {
			out = append(out, i)
		}
	}
	return out
}

// mergeRanges joins touching extents, whatever their flags.
func mergeRanges(exts []nbd.Extent) []nbd.Extent {
	var out []nbd.Extent
	for _, e := range exts {
		if n := len(out); n > 0 && out[n-1].End() >= e.Offset {
			out[n-1].Length = max(out[n-1].End(), e.End()) - out[n-1].Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

// covered reports whether [lo, hi) lies inside one of the merged, ascending extents.
func covered(exts []nbd.Extent, lo, hi int64) bool {
	i := sort.Search(len(exts), func(i int) bool { return exts[i].End() > lo })
	return i < len(exts) && exts[i].Offset <= lo && exts[i].End() >= hi
}
