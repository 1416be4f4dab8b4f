// Package validate checks user input (names, sizes, counts, paths) and returns
// errors that name the field and say what to do. Every error wraps
// errdefs.ErrInvalid, or errdefs.ErrNotFound for a path that does not exist.
package validate
