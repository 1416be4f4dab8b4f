// Package qga is a client for the stock qemu-guest-agent protocol.
//
// The host end is one byte stream (a QEMU chardev socket wired to the guest's
// org.qemu.guest_agent.0 port) whose state we can never fully trust: the agent
// may be absent, hung, restarted or confused, and answers carry nothing that
// ties them to a request. So the client runs one command at a time, bounds
// every wait by the caller's context, and resynchronizes the stream with
// guest-sync-delimited before the first call and after anything went wrong.
//
// The guest is not trusted: each command has limits of its own (limits.go)
// on the size of its answer, enforced while reading, and on its time, which
// the caller's context can only shorten; error texts are made safe to print.
// Facts the guest reports come back as it said them: callers that keep or
// show them cap and clean them.
//
// Commands are sent without an "id": agents before QEMU 2.12 reject the
// member, and after a successful sync the next answer is ours anyway.
package qga
