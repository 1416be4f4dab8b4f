// Package guest is hv's integration services (Hyper-V's VMBus services) for
// one VM, on the stock qemu-guest-agent (internal/qga): the agent connection,
// the heartbeat, the guest's facts and the host's key-value pairs, commands
// and interactive sessions in the guest (PowerShell Direct), file copy, time
// sync, the backup freeze with its thaw guard, and the agent's ways to shut
// the guest down.
//
// A Guest lives as long as its VM in hvd; Attach and Detach follow the VM's
// QEMU process. It knows its VM only through the VM interface (is it running,
// which services are on, the key-value pairs), and tells hvd what it notices
// through Events. Everything the guest says is hostile: sizes are bounded by
// qga, texts are cleaned by textsafe before they are kept.
package guest
