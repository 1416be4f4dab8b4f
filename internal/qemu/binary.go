// Package qemu builds the command line of one QEMU process per VM, starts it
// in its own session with its messages kept in a log, watches or kills it by
// pid, and probes which accelerator really runs guests. It does not talk QMP;
// see internal/qmp.
package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"time"

	"github.com/hvproject/hv/internal/errdefs"
)

// BinaryName is the QEMU system emulator hv drives.
const BinaryName = "qemu-system-x86_64"

// versionTimeout: -version prints and exits at once; a hang means a broken install.
const versionTimeout = 10 * time.Second

// FindBinary finds qemu-system-x86_64 in PATH.
func FindBinary() (string, error) {
	bin, err := exec.LookPath(BinaryName)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found in PATH; install Debian's qemu-system-x86", errdefs.ErrNotFound, BinaryName)
	}
	return bin, nil
}

// Version returns QEMU's version, such as "7.2.22", from `bin -version`.
func Version(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-version")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: %s -version failed: %v: %s; check the qemu-system-x86 installation",
			errdefs.ErrUnavailable, bin, err, bytes.TrimSpace(out))
	}
	v, ok := parseVersion(out)
	if !ok {
		return "", fmt.Errorf("%w: cannot find a version in the output of %s -version (%q); check the qemu-system-x86 installation",
			errdefs.ErrUnavailable, bin, firstLine(out))
	}
	return v, nil
}

// parseVersion finds "7.2.22" in "QEMU emulator version 7.2.22 (Debian ...)".
func parseVersion(out []byte) (string, bool) {
	m := regexp.MustCompile(`version (\d+\.\d+(?:\.\d+)?)`).FindSubmatch(out)
	if m == nil {
		return "", false
	}
	return string(m[1]), true
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}
