package qmp

import (
	"context"
	"testing"
)

// For the external tests (package qmp_test), which use the package as its
// users do.

// StartQEMU runs a real QEMU with args after the common ones (-machine none
// unless args name another machine) and returns its QMP socket path.
func StartQEMU(t *testing.T, args ...string) string {
	sock, _ := startQEMU(t, args...)
	return sock
}

// Ctx is testCtx: a context bounding a call that must not hang.
func Ctx(t *testing.T) context.Context { return testCtx(t) }
