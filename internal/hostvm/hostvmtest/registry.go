package hostvmtest

// Add registers v (a VM a feature made, e.g. an import or a migration).
func (h *Host) Add(v *VM) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.vms[v.Name()] = v
}

// Remove forgets the VM named name.
func (h *Host) Remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.vms, name)
}
