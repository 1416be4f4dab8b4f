package qga

import (
	"context"
	"strconv"
)

// OSInfo describes the guest's operating system (guest-get-osinfo). On Linux
// ID..VersionID come from os-release(5), the rest from uname(2); fields the
// guest lacks are empty.
type OSInfo struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	PrettyName    string `json:"pretty-name"`
	Version       string `json:"version"`
	VersionID     string `json:"version-id"`
	KernelRelease string `json:"kernel-release"`
	KernelVersion string `json:"kernel-version"`
	Machine       string `json:"machine"`
}

// OSInfo runs guest-get-osinfo.
func (c *Client) OSInfo(ctx context.Context) (OSInfo, error) {
	var info OSInfo
	err := c.do(ctx, "guest-get-osinfo", nil, &info)
	return info, err
}

// Hostname returns the guest's host name (guest-get-host-name); it need not
// be fully qualified.
func (c *Client) Hostname(ctx context.Context) (string, error) {
	var ret struct {
		Name string `json:"host-name"`
	}
	err := c.do(ctx, "guest-get-host-name", nil, &ret)
	return ret.Name, err
}

// Interface is one guest network interface, loopback included.
type Interface struct {
	Name      string
	MAC       string   // empty when the guest reports none
	Addresses []string // "10.0.0.2/24", "fe80::1/64"
}

// Interfaces runs guest-network-get-interfaces.
func (c *Client) Interfaces(ctx context.Context) ([]Interface, error) {
	var ret []struct {
		Name  string `json:"name"`
		MAC   string `json:"hardware-address"`
		Addrs []struct {
			IP     string `json:"ip-address"`
			Prefix int    `json:"prefix"`
		} `json:"ip-addresses"`
	}
	if err := c.do(ctx, "guest-network-get-interfaces", nil, &ret); err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ret))
	for _, r := range ret {
		i := Interface{Name: r.Name, MAC: r.MAC}
		for _, a := range r.Addrs {
			i.Addresses = append(i.Addresses, a.IP+"/"+strconv.Itoa(a.Prefix))
		}
		out = append(out, i)
	}
	return out, nil
}
