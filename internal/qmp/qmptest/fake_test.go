package qmptest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/qmp"
)

type setThing struct {
	Name string `json:"name"`
}

func (setThing) Command() string { return "x-set-thing" }

func TestFakeRecordsAndAnswers(t *testing.T) {
	f := New()
	f.Handle("x-set-thing", func(c Call) (any, error) {
		if c.Args.(setThing).Name == "bad" {
			return nil, Reject("DeviceNotFound", "no such thing")
		}
		return nil, nil
	})
	f.Answer("query-status", json.RawMessage(`{"status":"running","running":true,"singlestep":false}`))
	ctx := t.Context()
	if err := qmp.Do(ctx, f, setThing{"a"}); err != nil {
		t.Fatal(err)
	}
	err := qmp.Do(ctx, f, setThing{"bad"})
	var qe *qmp.Error
	if !errors.As(err, &qe) || !errors.Is(err, errdefs.ErrNotFound) || err.Error() != "qmp x-set-thing: no such thing (DeviceNotFound)" {
		t.Errorf("rejected call = %v", err)
	}
	var st qmp.StatusInfo
	if err := f.Execute(ctx, "query-status", nil, &st); err != nil || st.Status != "running" || !st.Running {
		t.Errorf("query-status = %+v, %v", st, err)
	}
	if err := f.Execute(ctx, "x-unknown", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command = %v", err)
	}
	calls := f.Calls()
	if len(calls) != 4 || calls[0].JSON != `{"name":"a"}` || calls[2].JSON != "" {
		t.Errorf("calls = %+v", calls)
	}
	if got := f.Commands(); len(got) != 4 || got[3] != "x-unknown" {
		t.Errorf("Commands() = %v", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := qmp.Do(cctx, f, setThing{"a"}); !errors.Is(err, errdefs.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Errorf("Do with a canceled ctx = %v", err)
	}
	if err := f.ExecuteWithFD(ctx, "getfd", nil, nil, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("ExecuteWithFD without a file = %v", err)
	}
	f.Answer("getfd", nil)
	if err := f.ExecuteWithFD(ctx, "getfd", nil, os.Stdin, nil); err != nil || f.Calls()[len(f.Calls())-1].File != os.Stdin {
		t.Errorf("ExecuteWithFD = %v; calls %+v", err, f.Calls())
	}
}

func TestFakeEvents(t *testing.T) {
	f := New()
	events, cancel := f.Subscribe()
	f.Emit("STOP", nil)
	f.Emit("DEVICE_DELETED", map[string]string{"device": "d", "path": "/p"})
	if ev := <-events; ev.Name != "STOP" || ev.Data != nil {
		t.Errorf("first event %+v", ev)
	}
	ev := <-events
	d, err := qmp.DecodeEvent[qmp.DeviceDeletedEvent](ev)
	if err != nil || d.Device != "d" || d.Path != "/p" {
		t.Errorf("DEVICE_DELETED = %+v, %v", d, err)
	}
	cancel()
	cancel()
	if _, ok := <-events; ok {
		t.Error("channel open after cancel")
	}
	f.Emit("STOP", nil) // no subscriber: nothing to do
}
