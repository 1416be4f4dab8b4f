package qmp

import "os"

// errDeadline is what socket I/O returns once ioctx.Watch forced a deadline.
var errDeadline = os.ErrDeadlineExceeded
