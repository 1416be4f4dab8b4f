package qemu

import (
	"context"
	"slices"
	"testing"
)

func TestParseMachineTypes(t *testing.T) {
	out := "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n" +
		"pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\nq35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n" +
		"pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\nnone                 empty machine\n"
	if got := parseMachineTypes(out); !slices.Equal(got, []string{"microvm", "pc-i440fx-7.2", "pc-q35-7.2"}) {
		t.Fatalf("machine types %v", got)
	}
}

// The QEMU installed runs the versioned types "pc" and "q35" stand for.
func TestMachineTypesInstalled(t *testing.T) {
	types, err := MachineTypes(context.Background(), "qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(types, func(s string) bool { return len(s) > 10 && s[:10] == "pc-i440fx-" }) ||
		!slices.ContainsFunc(types, func(s string) bool { return len(s) > 7 && s[:7] == "pc-q35-" }) || slices.Contains(types, "pc") {
		t.Fatalf("machine types %v", types)
	}
}
