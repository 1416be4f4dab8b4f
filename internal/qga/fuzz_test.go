package qga

import (
	"bufio"
	"bytes"
	"testing"
)

func FuzzDecodeLine(f *testing.F) {
	for _, s := range []string{
		`{"return": {}}`,
		`{"return": {"pid": 12}}`,
		"\xff{\"return\": 1234}",
		`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}`,
		`{"return": 1, "error": {"class": "x", "desc": "y"}}`,
		`garbage`, ``, "\xff", "junk\xff{\"return\": 5}\xff",
		`{"return": null}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		a, synced, blank, err := decodeLine(line)
		if synced != bytes.Contains(line, []byte{sentinel}) {
			t.Fatalf("synced = %v for %q", synced, line)
		}
		if blank && err != nil {
			t.Fatalf("blank line with error %v", err)
		}
		if err == nil && !blank && (a.ret == nil) == (a.err == nil) {
			t.Fatalf("answer needs exactly one of return/error: %q", line)
		}
		// The line reader hands the line back unchanged (modulo the ending).
		got, rerr := readLine(bufio.NewReader(bytes.NewReader(append(bytes.Clone(line), '\n'))), nil, listAnswer)
		if !bytes.Contains(line, []byte{'\n'}) && (rerr != nil || !bytes.Equal(got, bytes.TrimRight(line, "\r\n"))) {
			t.Fatalf("readLine(%q) = %q, %v", line, got, rerr)
		}
	})
}
