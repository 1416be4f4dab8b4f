package host

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/vmconfig"
)

// TestConfigChangesDoNotUndoEachOther: settings changed at the same time by
// different requests (key-value pairs, integration services, CPUs, the
// checkpoint type) all survive, in memory and on disk: every change is a
// read-modify-write of the current configuration as one step.
func TestConfigChangesDoNotUndoEachOther(t *testing.T) {
	s := newOfflineService(t)
	v := addVM(t, s, "race")
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(3)
		go func() {
			defer wg.Done()
			if err := s.Guest().SetKVP(ctx, "race", fmt.Sprintf("k%d", i), "v"); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			for {
				cpus := 1 + i%4
				_, err := s.UpdateVM(ctx, "race", api.VMUpdate{CPUs: &cpus})
				if !errors.Is(err, errdefs.ErrConflict) { // another set holds the VM: retry
					if err != nil {
						t.Error(err)
					}
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			req := api.IntegrationUpdate{Disable: []string{api.ServiceTimeSync}}
			if i%2 == 1 {
				req = api.IntegrationUpdate{Enable: []string{api.ServiceTimeSync}, Disable: []string{api.ServiceBackup}}
			}
			if _, err := s.Guest().UpdateIntegration(ctx, "race", req); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	v.mu.Lock()
	mem := v.cfg.Clone()
	v.mu.Unlock()
	disk, _, err := vmconfig.Load(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]vmconfig.Config{"in memory": mem, "on disk": disk} {
		for i := 0; i < n; i++ {
			if _, ok := c.KVP[fmt.Sprintf("k%d", i)]; !ok {
				t.Errorf("%s: key k%d was lost to a concurrent change (%d of %d kept)", name, i, len(c.KVP), n)
				break
			}
		}
	}
	if fmt.Sprint(mem.KVP) != fmt.Sprint(disk.KVP) || mem.CPUs != disk.CPUs || fmt.Sprint(mem.DisabledServices) != fmt.Sprint(disk.DisabledServices) {
		t.Errorf("memory and disk disagree: %+v / %+v", mem, disk)
	}
}
