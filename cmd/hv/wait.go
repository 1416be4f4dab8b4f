package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
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

// vmChange starts a change of a VM, follows its operation, then confirms with
// done(the VM the operation left), or prints the VM for -o json/yaml.
func (a *app) vmChange(cmd *cobra.Command, name string, start func(context.Context, *client.Client) (api.Operation, error),
	done func(api.VM) string) error {
	ctx, c := cmd.Context(), a.client()
	op, err := start(ctx, c)
	if err != nil {
		return err
	}
	op, waited, err := a.follow(ctx, c, op)
	if err != nil || !waited {
		return err
	}
	vm, err := a.resultVM(ctx, c, op, name)
	if err != nil {
		return err
	}
	if a.output != outTable {
		return a.show(vm, nil)
	}
	a.say("%s", done(vm))
	return nil
}
