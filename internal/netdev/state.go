package netdev

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/fsutil"
)

// record is one switch on disk (stateDir/switches/NAME.json). Ports are kept
// too: taps outlive hvd, and Restore re-attaches them to a re-made bridge.
type record struct {
	Version int             `json:"version"`
	Name    string          `json:"name"`
	Type    string          `json:"type"`
	Bridge  string          `json:"bridge"`
	Uplink  string          `json:"uplink,omitempty"`
	Subnet  string          `json:"subnet,omitempty"`
	DHCP    bool            `json:"dhcp,omitempty"`
	Ports   map[string]port `json:"ports,omitempty"` // by host interface name
}

// port is one host interface hv attached to a switch.
type port struct {
	Owner string `json:"owner"` // "vm/nic"
	VLAN  int    `json:"vlan,omitempty"`
}

const recordVersion = 1

func (r *record) api() api.Switch {
	s := api.Switch{Name: r.Name, Type: r.Type, Bridge: r.Bridge, Uplink: r.Uplink,
		Subnet: r.Subnet, DHCP: r.DHCP, Ports: []string{}}
	for _, p := range r.Ports {
		s.Ports = append(s.Ports, p.Owner)
	}
	sort.Strings(s.Ports)
	return s
}

func (r *record) clone() *record {
	c := *r
	c.Ports = make(map[string]port, len(r.Ports))
	for k, v := range r.Ports {
		c.Ports[k] = v
	}
	return &c
}

// store reads and writes the switch files.
type store struct{ dir string }

func (s store) path(name string) string { return filepath.Join(s.dir, name+".json") }

func (s store) save(r *record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.path(r.Name), append(b, '\n'), 0o600)
}

func (s store) remove(name string) error {
	if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(s.dir)
}

func (s store) loadAll() (map[string]*record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]*record{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := fsutil.ReadFileNoFollow(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("switch file %s is damaged: %v; fix or remove it", filepath.Join(s.dir, e.Name()), err)
		}
		if r.Ports == nil {
			r.Ports = map[string]port{}
		}
		out[r.Name] = &r
	}
	return out, nil
}
