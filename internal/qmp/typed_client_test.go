package qmp

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// The typed commands over a real connection, and their validation.

func TestRunDecodesAndKeepsErrors(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		cmd, _ := f.read()
		f.answer(cmd.ID, `[{"id":"m","type":"mirror","status":"ready","current-progress":5,"total-progress":5}]`)
		cmd, _ = f.read()
		f.send(`{"error": {"class": "DeviceNotFound", "desc": "Device 'data' not found"}, "id": ` + string(cmd.ID) + `}`)
	}()
	jobs, err := Run(testCtx(t), c, QueryJobs{})
	if err != nil || len(jobs) != 1 || jobs[0] != (Job{ID: "m", Type: "mirror", Status: JobReady, CurrentProgress: 5, TotalProgress: 5}) {
		t.Fatalf("Run = %+v, %v", jobs, err)
	}
	// The same error Execute returns: *Error inside, DeviceNotFound as ErrNotFound.
	err = Do(testCtx(t), c, DeviceDel{ID: "data"})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || !errors.Is(err, errdefs.ErrNotFound) ||
		err.Error() != "qmp device_del: Device 'data' not found (DeviceNotFound)" {
		t.Errorf("Do = %v", err)
	}
}

func TestDoPassesTheFile(t *testing.T) {
	c, f := dialFake(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go func() {
		cmd, oob := f.read()
		fds := parseRights(t, oob)
		if cmd.Execute != "getfd" || string(cmd.Arguments) != `{"fdname":"hv-save"}` || len(fds) != 1 {
			t.Errorf("got %s %s with %d descriptors", cmd.Execute, cmd.Arguments, len(fds))
		}
		for _, fd := range fds {
			os.NewFile(uintptr(fd), "received").Close()
		}
		f.answer(cmd.ID, `{}`)
	}()
	if err := Do(testCtx(t), c, GetFD{Name: "hv-save", File: w}); err != nil {
		t.Fatal(err)
	}
	if err := Do(testCtx(t), c, GetFD{Name: "hv-save"}); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "File") {
		t.Errorf("getfd without a file: %v", err)
	}
}

// sendNothing fails the test if anything reaches it.
type sendNothing struct{ t *testing.T }

func (s sendNothing) Execute(ctx context.Context, command string, args any, result any) error {
	s.t.Errorf("%s was sent", command)
	return nil
}

func (s sendNothing) ExecuteWithFD(ctx context.Context, command string, args any, f *os.File, result any) error {
	s.t.Errorf("%s was sent", command)
	return nil
}

// TestInvalidCommandsAreNotSent: what QMP cannot express, or hv must not
// leave ambiguous, fails with ErrInvalid naming the command and the field.
func TestInvalidCommandsAreNotSent(t *testing.T) {
	e := sendNothing{t}
	for _, c := range []struct {
		cmd  Command
		want string
	}{
		{nil, "no command"},
		{BlockdevAdd{}, "blockdev-add without a node"},
		{BlockdevAdd{Node: Qcow2Node{NodeName: "q"}}, `qcow2 node "q" without a file`},
		{BlockdevAdd{Node: RawNode{NodeName: "r"}}, `raw node "r" without a file`},
		{BlockdevAdd{Node: Qcow2Node{NodeName: "q", File: BlockdevRef{Name: "f"}, Backing: "b", BackingFromHeader: true}}, "both Backing"},
		{BlockdevAdd{Node: Qcow2Node{NodeName: "q", File: BlockdevRef{Name: "f", Node: FileNode{Filename: "/x"}}}}, `sets both Name "f" and Node`},
		{BlockdevAdd{Node: Qcow2Node{NodeName: "q", File: BlockdevRef{Name: "f"}, DataFile: &BlockdevRef{}}}, "empty node reference"},
		{BlockDirtyBitmapMerge{Node: "n", Target: "t", Bitmaps: []BitmapRef{{Node: "n"}}}, `bitmap reference without a name (node "n")`},
		{Transaction{Actions: []Action{BlockdevSnapshot{}, nil}}, "transaction action 1 is nil"},
		{DeviceAdd{Driver: "virtio-blk-pci", ID: "d", Drive: "n", Props: map[string]any{"drive": "m"}}, `property "drive" is set both`},
		{DeviceAdd{Driver: "virtio-blk-pci", ID: "d", Props: map[string]any{"f": func() {}}}, `property "f"`},
		{NetdevAdd{}, "without a backend"},
		{ObjectAdd{}, "without an object"},
		{BlockExportAdd{}, "without an export"},
		{NBDServerStart{}, "socket address without a type"},
		{QomSet{Path: "p", Property: "x", Value: make(chan int)}, "encoding arguments"},
	} {
		err := Do(testCtx(t), e, c.cmd)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Do(%#v) = %v; want ErrInvalid with %q", c.cmd, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "MarshalJSON") {
			t.Errorf("error keeps encoding/json's wrapper: %v", err)
		}
	}
}
