// Package sealed reads and writes hv's state files: a JSON envelope holding a
// format version, a body, and a SHA-256 checksum of the body, replaced
// atomically. A file changed outside hv, damaged, or written by a newer hv is
// refused with a message that says so.
package sealed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/fsutil"
)

// Format names the envelope's fields (each kind of file keeps its own names)
// and the newest version this hv writes.
type Format struct {
	VersionKey string // e.g. "config_version"
	BodyKey    string // e.g. "vm"
	Version    int
}

// ErrTooNew marks a file written by a newer hv.
var ErrTooNew = errors.New("written by a newer hv")

func checksum(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Marshal seals body in f's envelope.
func (f Format) Marshal(body any) ([]byte, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	env := map[string]any{f.VersionKey: f.Version, "checksum": checksum(raw), f.BodyKey: json.RawMessage(raw)}
	data, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Write seals body and replaces path with it, durably.
func (f Format) Write(path string, body any) error {
	data, err := f.Marshal(body)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, data, 0o600)
}

// Open checks the envelope and returns the version and the body, compacted,
// exactly as its checksum covers it. Errors wrap errdefs.ErrInvalid and name
// the file (path is used only in messages).
func (f Format) Open(path string, data []byte) (int, []byte, error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		return 0, nil, fmt.Errorf("%s is not a valid hv file (%v); restore it from a backup or an export: %w", path, err, errdefs.ErrInvalid)
	}
	var version int
	var sum string
	if err := json.Unmarshal(env[f.VersionKey], &version); err != nil {
		return 0, nil, fmt.Errorf("%s has no valid %q: %w", path, f.VersionKey, errdefs.ErrInvalid)
	}
	if version > f.Version {
		return version, nil, fmt.Errorf("%s has version %d, newer than this hv reads (at most %d); upgrade hv on this host: %w: %w",
			path, version, f.Version, ErrTooNew, errdefs.ErrInvalid)
	}
	_ = json.Unmarshal(env["checksum"], &sum)
	var compact bytes.Buffer
	if len(env[f.BodyKey]) == 0 || json.Compact(&compact, env[f.BodyKey]) != nil {
		return version, nil, fmt.Errorf("%s has no valid %q object: %w", path, f.BodyKey, errdefs.ErrInvalid)
	}
	if got := checksum(compact.Bytes()); got != sum {
		return version, nil, fmt.Errorf("%s: checksum mismatch (stored %s, computed %s): the file was changed outside hv or damaged; restore it from a backup or an export: %w",
			path, sum, got, errdefs.ErrInvalid)
	}
	return version, compact.Bytes(), nil
}

// ReadOptional reads path and opens its envelope. A file that does not exist
// is no error: found is false (hv's state files are optional until first
// written). A symbolic link or any other non-regular file is refused
// (fsutil.ErrNotRegular, errdefs.ErrInvalid). A file that cannot be read
// wraps errdefs.ErrUnavailable.
func (f Format) ReadOptional(path string) (version int, body []byte, found bool, err error) {
	data, err := fsutil.ReadFileNoFollow(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, false, nil
	}
	if errors.Is(err, fsutil.ErrNotRegular) {
		return 0, nil, true, err
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("reading %s: %v; check the directory's permissions: %w", path, err, errdefs.ErrUnavailable)
	}
	version, body, err = f.Open(path, data)
	return version, body, true, err
}
