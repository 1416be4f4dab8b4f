package qmp

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

// Do and Run over a real connection (to a fake QEMU): what reaches the
// socket, and the errors callers see.

type testArgs struct {
	Node string `json:"node,omitempty"`
}

func (testArgs) Command() string { return "x-test" }

type testAnswer struct {
	ID    string `json:"id"`
	Count uint64 `json:"count"`
}

type testQuery struct{}

func (testQuery) Command() string       { return "x-query" }
func (testQuery) returns(*[]testAnswer) {}

func TestDoSendsNoEmptyArguments(t *testing.T) {
	c, f := dialFake(t)
	done := make(chan error, 1)
	go func() { done <- Do(testCtx(t), c, testArgs{}) }()
	cmd, _ := f.read()
	if cmd.Execute != "x-test" || cmd.Arguments != nil {
		t.Errorf("sent %q with arguments %s; want none", cmd.Execute, cmd.Arguments)
	}
	f.answer(cmd.ID, `{}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	go func() { done <- Do(testCtx(t), c, testArgs{Node: "n"}) }()
	cmd, _ = f.read()
	if string(cmd.Arguments) != `{"node":"n"}` {
		t.Errorf("arguments %s", cmd.Arguments)
	}
	f.answer(cmd.ID, `{}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Execute's callers that pass a nil map send no "arguments" either:
	// QEMU refuses "arguments": null.
	var none map[string]any
	go func() { done <- c.Execute(testCtx(t), "x-test", none, nil) }()
	cmd, _ = f.read()
	if cmd.Arguments != nil {
		t.Errorf("nil map sent as arguments %s", cmd.Arguments)
	}
	f.answer(cmd.ID, `{}`)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunDecodesTheAnswer(t *testing.T) {
	c, f := dialFake(t)
	go func() {
		cmd, _ := f.read()
		f.answer(cmd.ID, `[{"id":"a","count":18446744073709551615}]`)
		cmd, _ = f.read()
		f.answer(cmd.ID, `{"not":"a list"}`)
		cmd, _ = f.read()
		f.send(`{"error": {"class": "GenericError", "desc": "nope"}, "id": ` + string(cmd.ID) + `}`)
	}()
	got, err := Run(testCtx(t), c, testQuery{})
	if err != nil || len(got) != 1 || got[0] != (testAnswer{"a", 1<<64 - 1}) {
		t.Fatalf("Run = %+v, %v", got, err)
	}
	if _, err := Run(testCtx(t), c, testQuery{}); err == nil || !strings.HasPrefix(err.Error(), "qmp x-query: decoding answer into *[]qmp.testAnswer: ") {
		t.Errorf("Run of an answer of another shape = %v", err)
	}
	var qe *Error
	if _, err := Run(testCtx(t), c, testQuery{}); !errors.As(err, &qe) || err.Error() != "qmp x-query: nope (GenericError)" {
		t.Errorf("Run of an error answer = %v", err)
	}
	if err := Do(testCtx(t), c, nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Do(nil) = %v", err)
	}
}
