package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

func TestProgressBarOnTTY(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := &Progress{w: &buf, tty: true, now: func() time.Time { return now }, tenths: -1}
	p.Update(api.Operation{Progress: &api.Progress{Stage: "copy", Done: 0, Total: 100 << 20, Unit: "bytes"}})
	now = now.Add(time.Second)
	buf.Reset()
	p.Update(api.Operation{Progress: &api.Progress{Stage: "copy", Done: 45 << 20, Total: 100 << 20, Unit: "bytes"}})
	want := "\r[==========>             ]  45% copy  45.0 MiB/s\x1b[K"
	if buf.String() != want {
		t.Fatalf("bar %q, want %q", buf.String(), want)
	}
	buf.Reset()
	p.Done()
	if buf.String() != "\r\x1b[K" {
		t.Fatalf("done %q", buf.String())
	}
}
