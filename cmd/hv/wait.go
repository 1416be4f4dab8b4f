package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
)

// follow waits for op to end, showing progress on stderr unless --quiet. With --async it
// prints the operation instead and returns waited=false. A failed operation is an error
// carrying hvd's message.
func (a *app) follow(ctx context.Context, c *client.Client, op api.Operation) (final api.Operation, waited bool, err error) {
	if a.async {
		if a.output == outTable {
			fmt.Fprintln(a.stdout, op.ID)
			return op, false, nil
		}
		return op, false, a.show(op, nil)
	}
	final, err = a.wait(ctx, c, op)
	return final, true, err
}

// wait follows op to its end whatever --async says (for `operation wait`).
func (a *app) wait(ctx context.Context, c *client.Client, op api.Operation) (api.Operation, error) {
	if client.Finished(op) {
		return op, client.OperationError(op)
	}
	var onProgress func(api.Operation)
	p := newProgress(a.stderr, time.Now)
	if !a.quiet {
		onProgress = p.update
	}
	final, err := c.WaitOperation(ctx, op.ID, onProgress)
	p.done()
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return final, &interruptedError{opID: op.ID, err: err}
	}
	return final, err
}

// resultVM is the VM an operation left (its result), or as hvd shows it now.
func (a *app) resultVM(ctx context.Context, c *client.Client, op api.Operation, name string) (api.VM, error) {
	var vm api.VM
	if op.Result != nil && client.DecodeResult(op, &vm) == nil && vm.Name != "" {
		return vm, nil
	}
	return c.GetVM(ctx, name)
}
