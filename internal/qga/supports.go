package qga

import (
	"context"
	"sync"
)

// cmdCache holds which commands guest-info listed as enabled. It lives as
// long as the connection; an agent restarted inside the guest (an update)
// keeps the connection, so commands answered "not found" or "disabled"
// clear it, as do Freeze and Thaw.
type cmdCache struct {
	mu      sync.Mutex
	enabled map[string]bool // nil: ask the agent
	gen     uint64          // bumped by forget, so a slow answer cannot undo it
}

func (cc *cmdCache) get() (map[string]bool, uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.enabled, cc.gen
}

func (cc *cmdCache) set(enabled map[string]bool, gen uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.gen == gen {
		cc.enabled = enabled
	}
}

func (cc *cmdCache) forget() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.enabled = nil
	cc.gen++
}

// Supports returns which of commands the agent lacks or has disabled, by
// guest-info, which works in every state. The answer is cached, except one
// given while the guest is frozen (guest-fsfreeze-freeze disabled): then
// most commands are off only for the moment.
func (c *Client) Supports(ctx context.Context, commands ...string) (missing []string, err error) {
	enabled, gen := c.cmds.get()
	if enabled == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, err
		}
		enabled = make(map[string]bool, len(info.Commands))
		for _, cmd := range info.Commands {
			enabled[cmd.Name] = cmd.Enabled
		}
		if on, listed := enabled["guest-fsfreeze-freeze"]; on || !listed {
			c.cmds.set(enabled, gen)
		}
	}
	for _, name := range commands {
		if !enabled[name] {
			missing = append(missing, name)
		}
	}
	return missing, nil
}
