package host

import (
	"testing"

	"github.com/hvproject/hv/internal/checkpoint"
	"github.com/hvproject/hv/internal/vmconfig"
)

// A running VM's export drops the temporary checkpoint and makes its images
// the exported VM's active disks; a disk the parent lacks becomes a plain base.
func TestExportTreeReplacesTheTemporaryCheckpoint(t *testing.T) {
	tree := &checkpoint.Tree{
		Checkpoints: []checkpoint.Checkpoint{
			{ID: "a", Name: "a", Type: checkpoint.Production, Disks: map[string]string{"root": "root.qcow2"}, Formats: map[string]string{"root": "qcow2"}},
			{ID: "tmp", Name: "hv-export-1", Parent: "a", Type: checkpoint.Production,
				Disks:   map[string]string{"root": "root-1.qcow2", "data": "data.raw"},
				Formats: map[string]string{"root": "qcow2", "data": "raw"}},
		},
		Current: "tmp",
		Active:  map[string]string{"root": "root-2.qcow2", "data": "data-2.qcow2"},
		Journal: &checkpoint.Journal{Kind: checkpoint.KindDelete, Step: checkpoint.StepCommitted},
	}
	cfg := vmconfig.Config{Disks: []vmconfig.Disk{
		{Name: "root", File: "root-2.qcow2", Format: "qcow2"},
		{Name: "data", File: "data-2.qcow2", Format: "qcow2"},
	}}
	out, err := exportTree(tree, "tmp", &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Checkpoints) != 1 || out.Checkpoints[0].ID != "a" || out.Current != "a" || out.Journal != nil {
		t.Fatalf("exported tree = %+v; want only checkpoint a, current, no journal", out)
	}
	if got := out.Active; len(got) != 1 || got["root"] != "root-1.qcow2" {
		t.Fatalf("active = %v; want root on the temporary image, data standalone", got)
	}
	if cfg.Disks[0].File != "root-1.qcow2" || cfg.Disks[1].File != "data.raw" || cfg.Disks[1].Format != "raw" {
		t.Fatalf("config disks = %+v; want the temporary checkpoint's images", cfg.Disks)
	}
	if len(tree.Checkpoints) != 2 || tree.Active["root"] != "root-2.qcow2" {
		t.Fatal("exportTree changed the VM's own tree")
	}
}
