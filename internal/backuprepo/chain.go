package backuprepo

import (
	"fmt"

	"github.com/hvproject/hv/internal/backuprepo/packstore"
	"github.com/hvproject/hv/internal/errdefs"
)

// chain returns b and the ancestors its disks need, newest first: it walks the
// parents until every disk of b has reached a backup where it is a base. It
// reads manifests only, and checks that the chain is complete: every parent
// present, of the same VM, holding each disk at the same size and block size.
func (r *Repo) chain(b *Backup) ([]*Backup, error) {
	out := []*Backup{b}
	pending := map[string]*Disk{}
	for i := range b.Disks {
		if !b.Disks[i].Base {
			pending[b.Disks[i].Name] = &b.Disks[i]
		}
	}
	seen := map[string]bool{b.ID: true}
	broken := func(format string, args ...any) error {
		return damaged("backup %s cannot be restored: %s; take a full backup of VM %s, and discard the broken backups (hv backup verify lists them)",
			b.ID, fmt.Sprintf(format, args...), b.VM)
	}
	for cur := b; len(pending) > 0; {
		if cur.Parent == "" {
			return nil, broken("backup %s has no parent, yet some disks have no base", cur.ID)
		}
		if seen[cur.Parent] {
			return nil, broken("its chain of parents loops at %s", cur.Parent)
		}
		p, err := r.load(cur.Parent)
		if errdefs.Is(err, errdefs.ErrNotFound) {
			return nil, broken("%s, the parent of %s, is missing from the repository", cur.Parent, cur.ID)
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s needs its ancestor %s: %w", b.ID, cur.Parent, err)
		}
		if p.VM != b.VM || (p.VMID != "" && b.VMID != "" && p.VMID != b.VMID) {
			return nil, broken("its ancestor %s is a backup of another VM (%s %s)", p.ID, p.VM, p.VMID)
		}
		for name, d := range pending {
			pd := p.Disk(name)
			switch {
			case pd == nil:
				return nil, broken("its ancestor %s has no disk %s", p.ID, name)
			case pd.Size != d.Size || pd.BlockSize != d.BlockSize:
				return nil, broken("disk %s is %d bytes in blocks of %d, but %d bytes in blocks of %d in its ancestor %s",
					name, d.Size, d.BlockSize, pd.Size, pd.BlockSize, p.ID)
			case pd.Base:
				delete(pending, name)
			}
		}
		seen[p.ID] = true
		out = append(out, p)
		cur = p
	}
	return out, nil
}

// resolve returns the blocks of disk name as of chain[0]: index → hash, from
// the newest backup that names the index, down to the disk's base. An index
// absent from the result reads as zeros.
func (r *Repo) resolve(chain []*Backup, name string) (map[int64]packstore.Hash, error) {
	res := map[int64]packstore.Hash{}
	for _, c := range chain {
		d := c.Disk(name)
		if d == nil { // chain checked it; a guard against misuse
			return nil, damaged("backup %s has no disk %s", c.ID, name)
		}
		es, err := r.readMap(c, d)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if _, ok := res[e.Index]; !ok {
				res[e.Index] = e.Hash
			}
		}
		if d.Base {
			break
		}
	}
	return res, nil
}
