package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// maxConfigSize bounds the configuration file: a few lines of settings.
const maxConfigSize = 64 << 10

// configHelp documents the file's format (hvd --help).
const configHelp = `The configuration file (--config FILE) holds any of hvd's flags, one per line
as "name = value", with the flag's long name; '#' starts a comment. A flag
given on the command line overrides the file. listen may be given on several
lines, or as a comma-separated list; storage on several lines. The file must be owned by the user hvd
runs as and not writable by others, as it decides what hvd trusts:

  # /etc/hv/hvd.conf
  root   = /var/lib/hv
  listen = 192.0.2.10:8443
  listen = [2001:db8::10]:8443
  storage = fast=/srv/nvme/hv
  storage = shared=/mnt/cluster/hv
  log-level = info`

// applyConfig sets, from the configuration file at path, every flag of fs
// that the command line left alone.
func applyConfig(fs *pflag.FlagSet, path string) error {
	data, err := readConfig(path)
	if err != nil {
		return err
	}
	fromFile := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		where := fmt.Sprintf("--config %s, line %d", path, n)
		f := fs.Lookup(key)
		switch {
		case !ok:
			return fmt.Errorf("%s: %q is not \"name = value\"; write a flag's long name, '=' and its value", where, line)
		case f == nil || key == "config" || key == "help":
			return fmt.Errorf("%s: %q is no setting of hvd; use a flag's long name (hvd --help lists them)", where, key)
		case f.Changed && !fromFile[key]:
			continue // the command line wins
		case fromFile[key] && f.Value.Type() != "stringSlice" && f.Value.Type() != "stringArray":
			return fmt.Errorf("%s: %s is set twice; keep one line", where, key)
		}
		values := []string{value}
		if f.Value.Type() == "stringSlice" {
			values = splitList(value)
		}
		for _, v := range values {
			if err := fs.Set(key, v); err != nil {
				return fmt.Errorf("%s: %s: %v", where, key, err)
			}
		}
		fromFile[key] = true
	}
	return sc.Err()
}

// readConfig reads the file, refusing one that another user could change:
// hvd runs as root and the file names its root and what it listens on.
func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("--config: %s is not a regular file", path)
	case !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("--config: %s is unsafe: it must be owned by the user hvd runs as (uid %d) and not writable by group or others (mode %04o); fix it with: chown %d %s && chmod 644 %s",
			path, os.Geteuid(), fi.Mode().Perm(), os.Geteuid(), shellQuote(path), shellQuote(path))
	case fi.Size() > maxConfigSize:
		return nil, fmt.Errorf("--config: %s is %d bytes; a configuration file has at most %d", path, fi.Size(), maxConfigSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize))
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return data, nil
}

// splitList splits a comma-separated list, dropping spaces and empty items.
func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
