package qmp

import (
	"bufio"
	"bytes"
	"testing"
)

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		testGreeting,
		`{"return": {}, "id": "hv-1"}`,
		`{"return": {"status": "running", "running": true}, "id": "hv-2"}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": "hv-3"}`,
		`{"error": {"class": "GenericError", "desc": "x"}}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`,
		`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": -1, "microseconds": -1}}`,
		`{"return": 1, "error": {}}`,
		`{"event": ""}`,
		`{"id": 5, "return": null}`,
		`[]`, `null`, ``, "\xff{}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decodeMessage(line)
		if err != nil {
			return
		}
		switch m.kind {
		case kindAnswer:
			if (m.ret == nil) == (m.err == nil) {
				t.Fatalf("answer must have exactly one of return/error: %q", line)
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Fatalf("event without name accepted: %q", line)
			}
		case kindGreeting:
		default:
			t.Fatalf("decoded %q to kind %d", line, m.kind)
		}
		// Whatever decodes must also survive the line reader unchanged.
		got, err := readLine(bufio.NewReader(bytes.NewReader(append(bytes.Clone(line), '\n'))), nil)
		if err != nil || !bytes.Equal(got, bytes.TrimRight(line, "\r\n")) {
			t.Fatalf("readLine(%q) = %q, %v", line, got, err)
		}
	})
}
