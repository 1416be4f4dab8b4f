package machine

import (
	"encoding/json"
	"testing"

	"github.com/hvproject/hv/internal/qmp"
)

// A disk error that paused the guest is passed on with its node and cause;
// one QEMU only reported to the guest is not; a flood of them does not
// block the event reader.
func TestNoteIOError(t *testing.T) {
	m := &Machine{ioErrs: make(chan IOError, ioErrorBacklog)}
	ev := func(data string) qmp.Event { return qmp.Event{Name: "BLOCK_IO_ERROR", Data: json.RawMessage(data)} }
	m.noteIOError(ev(`{"device":"","node-name":"img-1","operation":"write","action":"report","nospace":true,"reason":"No space left on device"}`))
	m.noteIOError(ev(`{"device":"","node-name":"img-2","operation":"write","action":"stop","nospace":true,"reason":"No space left on device"}`))
	select {
	case e := <-m.IOErrors():
		if e != (IOError{Node: "img-2", Operation: "write", Reason: "No space left on device", NoSpace: true}) {
			t.Fatalf("got %+v", e)
		}
	default:
		t.Fatal("a stopping error was not passed on")
	}
	select {
	case e := <-m.IOErrors():
		t.Fatalf("a reported error was passed on: %+v", e)
	default:
	}
	for i := 0; i < 10*ioErrorBacklog; i++ { // must not block
		m.noteIOError(ev(`{"device":"d","operation":"read","action":"stop","reason":"Input/output error"}`))
	}
	if e := <-m.IOErrors(); e.Node != "d" || e.Operation != "read" {
		t.Fatalf("device name not used when the node is unnamed: %+v", e)
	}
}
