package devices

import (
	"context"
	"fmt"
	"strings"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

// Switches: the rules that involve VMs are here; netdev does the rest.

// ListSwitches lists the virtual switches.
func (f *Service) ListSwitches() []api.Switch { return f.net.List() }

// GetSwitch returns one switch.
func (f *Service) GetSwitch(name string) (api.Switch, error) { return f.net.Get(name) }

// CreateSwitch creates a virtual switch.
func (f *Service) CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	return f.net.Create(ctx, req)
}

// DeleteSwitch removes a switch that no VM's NIC names, running or not.
func (f *Service) DeleteSwitch(ctx context.Context, name string) error {
	var users []string
	for _, v := range f.h.VMs() {
		for _, n := range v.Config().NICs {
			if n.Switch == name {
				users = append(users, v.Name()+"/"+n.Name)
			}
		}
	}
	if len(users) > 0 {
		return errdefs.WithHint(fmt.Errorf("switch %s is used by %s: %w", name, strings.Join(users, ", "), errdefs.ErrConflict), "remove those NICs first")
	}
	return f.net.Delete(ctx, name)
}
