package undo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestUnwindsInReverseOnlyOnError(t *testing.T) {
	run := func(fail bool) (order []string, err error) {
		var u Stack
		defer u.OnError(&err, nil)
		for _, name := range []string{"a", "b", "c"} {
			u.Add(name, func(context.Context) error { order = append(order, name); return nil })
		}
		if fail {
			return order, errors.New("step d failed")
		}
		return order, nil
	}
	if order, err := run(true); err == nil || strings.Join(order, "") != "cba" {
		t.Fatalf("failure undid %v, want c b a (%v)", order, err)
	}
	if order, err := run(false); err != nil || len(order) != 0 {
		t.Fatalf("success undid %v (%v)", order, err)
	}
}

func TestKeepDropsWhatCameBefore(t *testing.T) {
	var undone []string
	var err error
	func() {
		var u Stack
		defer u.OnError(&err, nil)
		u.Add("before", func(context.Context) error { undone = append(undone, "before"); return nil })
		u.Keep()
		u.Add("after", func(context.Context) error { undone = append(undone, "after"); return nil })
		err = errors.New("failed after the point of no return")
	}()
	if fmt.Sprint(undone) != "[after]" {
		t.Fatalf("undone %v, want only the step added after Keep", undone)
	}
}

func TestUnwindReportsEveryFailedStepAndGoesOn(t *testing.T) {
	var u Stack
	ran := 0
	u.Add("first", func(ctx context.Context) error {
		ran++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("an undo step has no deadline")
		}
		return nil
	})
	u.Add("second", func(context.Context) error { ran++; return errors.New("blockdev-del refused") })
	err := u.Unwind()
	var ue *Error
	if ran != 2 || !errors.As(err, &ue) || ue.Step != "second" || !strings.Contains(err.Error(), "undo second: blockdev-del refused") {
		t.Fatalf("ran %d, err %v", ran, err)
	}
	if u.Unwind() != nil || ran != 2 {
		t.Fatal("a second Unwind ran the steps again")
	}
}

func TestDone(t *testing.T) {
	var u Stack
	u.Add("x", func(context.Context) error { t.Fatal("undone after Done"); return nil })
	u.Done()
	err := errors.New("late")
	u.OnError(&err, nil)
}
