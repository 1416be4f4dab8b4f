package backuprepo

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
)

// entry is one record of a block map: block Index of a disk holds the block Hash.
type entry struct {
	Index int64
	Hash  packstore.Hash
}

// A block map file is mapMagic followed by 40-byte records, each an 8-byte
// big-endian block index and a 32-byte hash, indexes strictly increasing.
const (
	mapMagic  = "HVBMAP1\n"
	mapRecord = 8 + sha256.Size
)

func encodeMap(es []entry) []byte {
	out := make([]byte, 0, len(mapMagic)+len(es)*mapRecord)
	out = append(out, mapMagic...)
	for _, e := range es {
		out = binary.BigEndian.AppendUint64(out, uint64(e.Index))
		out = append(out, e.Hash[:]...)
	}
	return out
}

// decodeMap parses a block map of a disk of nblocks blocks. Its error says
// what is wrong, without the file's name.
func decodeMap(data []byte, nblocks int64) ([]entry, error) {
	if len(data) < len(mapMagic) || string(data[:len(mapMagic)]) != mapMagic {
		return nil, errors.New("it does not start with the block map's magic \"HVBMAP1\\n\"")
	}
	nblocks = max(nblocks, 0)
	body := data[len(mapMagic):]
	if len(body)%mapRecord != 0 {
		return nil, fmt.Errorf("its length %d is not the magic plus whole %d-byte records", len(data), mapRecord)
	}
	es := make([]entry, len(body)/mapRecord)
	last := int64(-1)
	for i := range es {
		rec := body[i*mapRecord : (i+1)*mapRecord]
		idx := binary.BigEndian.Uint64(rec)
		if idx >= uint64(nblocks) {
			return nil, fmt.Errorf("record %d names block %d, past the disk's %d blocks", i, idx, nblocks)
		}
		if int64(idx) <= last {
			return nil, fmt.Errorf("record %d names block %d after block %d: indexes must increase", i, idx, last)
		}
		last = int64(idx)
		es[i].Index = int64(idx)
		copy(es[i].Hash[:], rec[8:])
	}
	return es, nil
}

// sortedEntries turns a writer's or a merge's index→hash map into map records;
// base drops zero blocks, which a disk's base implies.
func sortedEntries(m map[int64]packstore.Hash, base bool) []entry {
	es := make([]entry, 0, len(m))
	for i, h := range m {
		if base && h.IsZero() {
			continue
		}
		es = append(es, entry{i, h})
	}
	slices.SortFunc(es, func(a, b entry) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	return es
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
