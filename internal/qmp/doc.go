// Package qmp is a client for the QEMU Machine Protocol on a unix socket.
//
// A Client multiplexes many concurrent commands over one connection: each
// command carries an "id" and answers are matched by it, so callers never wait
// on each other. Asynchronous events are fanned out to subscribers (see
// Subscribe); a slow or absent subscriber never stalls the connection.
//
// # Typed commands
//
// Every command hv sends is a struct whose JSON encoding is the command's
// arguments, spelt as QEMU 7.2's QAPI schema spells them (cmd_vm.go,
// cmd_block.go, cmd_migrate.go). Do runs one; Run also returns its answer,
// decoded into the type the command names:
//
//	err := qmp.Do(ctx, c, qmp.BlockdevDel{NodeName: node})
//	jobs, err := qmp.Run(ctx, c, qmp.QueryJobs{}) // jobs is []qmp.Job
//
// Both take an Executor, which *Client implements and qmptest.Fake fakes,
// and return exactly the errors Execute returns; a command that cannot be
// encoded is ErrInvalid and is not sent. Unions take their branch as a field
// (BlockdevAdd{Node: Qcow2Node{...}}), transactions a list of Actions.
// DecodeEvent decodes an event's data into its type (ShutdownEvent, ...).
//
// The tests hold each command's wire JSON to JSON written from the schema,
// and validate it, and every answer and event type, against the schema the
// installed QEMU reports (query-qmp-schema); a field no test sets fails
// them. Add a command with a wire case in wire_test.go.
package qmp
