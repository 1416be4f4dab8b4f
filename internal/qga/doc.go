// Package qga is a client for the stock qemu-guest-agent protocol.
//
// The host end is one byte stream (a QEMU chardev socket wired to the guest's
// org.qemu.guest_agent.0 port) whose state we can never fully trust: the agent
// may be absent, hung, restarted or confused, and answers carry nothing that
// ties them to a request. So the client runs one command at a time, bounds
// every wait by the caller's context, and resynchronizes the stream with
// guest-sync-delimited before the first call and after anything went wrong.
//
// Commands are sent without an "id": agents before QEMU 2.12 reject the
// member, and after a successful sync the next answer is ours anyway.
package qga
