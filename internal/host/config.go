package host

import "github.com/hvproject/hv/internal/vmconfig"

// updateConfig changes the VM's configuration: change gets a copy of the
// current one (read now, not when the caller started), and what it leaves is
// written durably and becomes the VM's. Every change of a configuration goes
// through here, so that a long operation never writes back an old copy over
// a change made meanwhile (a key-value pair, an integration setting).
func (s *Service) updateConfig(v *vm, change func(c *vmconfig.Config) error) (vmconfig.Config, error) {
	v.cfgMu.Lock()
	defer v.cfgMu.Unlock()
	v.mu.Lock()
	cfg := v.cfg.Clone()
	v.mu.Unlock()
	if err := change(&cfg); err != nil {
		return vmconfig.Config{}, err
	}
	if err := v.store.SaveConfig(v.Dir(), cfg); err != nil {
		return vmconfig.Config{}, err
	}
	v.mu.Lock()
	v.cfg, v.cfgVer = cfg, vmconfig.CurrentVersion
	v.mu.Unlock()
	s.publishVM(v, "updated", "")
	return cfg, nil
}
