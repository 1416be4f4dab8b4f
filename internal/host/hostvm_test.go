package host

import (
	"testing"

	"github.com/hvproject/hv/internal/hostvm"
)

// Features restore and discard a VM's saved state by hostvm's name for it.
func TestSavedStateFileIsTheHosts(t *testing.T) {
	if fileSave != hostvm.SavedState {
		t.Fatalf("the host saves a VM's state in %q, features look for %q", fileSave, hostvm.SavedState)
	}
}
