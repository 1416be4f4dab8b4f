// Package results writes bench/RESULTS.md: the host the numbers come from, and the
// sections each benchmark measured, replaced in place so that a run keeps the
// sections it did not measure.
package results

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sections of RESULTS.md are delimited by <!-- bench:NAME --> and <!-- /bench:NAME -->.

func startMarker(name string) string { return "<!-- bench:" + name + " -->" }

func endMarker(name string) string { return "<!-- /bench:" + name + " -->" }

// Wrap puts a section's text between its markers.
func Wrap(name, body string) string {
	return startMarker(name) + "\n" + strings.TrimSpace(body) + "\n" + endMarker(name)
}

const resultsTitle = "# hv benchmark results\n\nWritten by `make bench` (`go run ./bench`); see bench/README.md for what is measured and how to read it.\n"

// replaceSections puts each of sections (already wrapped in markers) into doc: in place
// of the section of the same name when doc has it, else the host section after the
// title and the others at the end, in the order of order (the benchmarks in run
// order). Everything else in doc is kept as it is.
func replaceSections(doc string, sections map[string]string, order []string) string {
	if strings.TrimSpace(doc) == "" {
		doc = resultsTitle
	}
	names := append([]string{"host"}, order...)
	for n := range sections { // sections this program does not know still get written
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		sec, ok := sections[n]
		if !ok {
			continue
		}
		start, end := startMarker(n), endMarker(n)
		if i := strings.Index(doc, start); i >= 0 {
			if j := strings.Index(doc[i:], end); j >= 0 {
				doc = doc[:i] + sec + doc[i+j+len(end):]
				continue
			}
			// A start with no end: replace to the end of the file rather than keep half.
			doc = doc[:i] + sec + "\n"
			continue
		}
		if n == "host" {
			doc = insertAfterTitle(doc, sec)
			continue
		}
		doc = strings.TrimRight(doc, "\n") + "\n\n" + sec + "\n"
	}
	return doc
}

// insertAfterTitle puts sec right after the title bench writes, or at the top.
func insertAfterTitle(doc, sec string) string {
	if rest, ok := strings.CutPrefix(doc, resultsTitle); ok {
		return resultsTitle + "\n" + sec + "\n\n" + strings.TrimLeft(rest, "\n")
	}
	return sec + "\n\n" + doc
}

// Update rewrites path with sections replaced (see replaceSections), atomically.
func Update(path string, sections map[string]string, order []string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	doc := replaceSections(string(old), sections, order)
	if !strings.HasSuffix(doc, "\n") {
		doc += "\n"
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".RESULTS-*.md")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(doc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
