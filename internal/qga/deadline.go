package qga

import "math/rand/v2"

// newSyncID returns a positive id that survives a round trip through any
// JSON number parser (below 2^53).
func newSyncID() int64 { return rand.Int64N(1<<53-1) + 1 }
