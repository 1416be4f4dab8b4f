package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/spf13/cobra"
)

// Follow waits for op to end, showing progress on stderr unless --quiet. With --async it
// prints the operation instead and returns waited=false. A failed operation is an error
// carrying hvd's message.
func (a *App) Follow(ctx context.Context, c *client.Client, op api.Operation) (final api.Operation, waited bool, err error) {
	if a.Async {
		if a.Output == OutTable {
			fmt.Fprintln(a.Stdout, op.ID)
			return op, false, nil
		}
		return op, false, a.Show(op, nil)
	}
	final, err = a.Wait(ctx, c, op)
	return final, true, err
}

// Wait follows op to its end whatever --async says (for `operation wait`).
func (a *App) Wait(ctx context.Context, c *client.Client, op api.Operation) (api.Operation, error) {
	if client.Finished(op) {
		return op, client.OperationError(op)
	}
	var onProgress func(api.Operation)
	p := NewProgress(a.Stderr, time.Now)
	if !a.Quiet {
		onProgress = p.Update
	}
	final, err := c.WaitOperation(ctx, op.ID, onProgress)
	p.Done()
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return final, &InterruptedError{OpID: op.ID, Err: err}
	}
	return final, err
}

// ResultVM is the VM an operation left (its result), or as hvd shows it now.
func (a *App) ResultVM(ctx context.Context, c *client.Client, op api.Operation, name string) (api.VM, error) {
	var vm api.VM
	if op.Result != nil && client.DecodeResult(op, &vm) == nil && vm.Name != "" {
		return vm, nil
	}
	return c.GetVM(ctx, name)
}

// VMChange starts a change of a VM, follows its operation, then confirms with
// done(the VM the operation left), or prints the VM for -o json/yaml.
func (a *App) VMChange(cmd *cobra.Command, name string, start func(context.Context, *client.Client) (api.Operation, error),
	done func(api.VM) string) error {
	ctx, c := cmd.Context(), a.Client()
	op, err := start(ctx, c)
	if err != nil {
		return err
	}
	op, waited, err := a.Follow(ctx, c, op)
	if err != nil || !waited {
		return err
	}
	vm, err := a.ResultVM(ctx, c, op, name)
	if err != nil {
		return err
	}
	if a.Output != OutTable {
		return a.Show(vm, nil)
	}
	a.Say("%s", done(vm))
	return nil
}
