package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// MachineTypes lists the machine types bin runs ("-machine help"), aliases
// left out: the versioned names a VM keeps across a live migration.
func MachineTypes(ctx context.Context, bin string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-machine", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("%s -machine help: %w", bin, err)
	}
	return parseMachineTypes(string(out)), nil
}

func parseMachineTypes(out string) []string {
	var types []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasSuffix(line, ":") || strings.Contains(line, "(alias of ") || f[0] == "none" {
			continue
		}
		types = append(types, f[0])
	}
	return types
}
