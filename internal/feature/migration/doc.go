// Package migration moves VMs between hosts: live (a running VM's disks
// mirrored, then its memory and devices, with a pause of milliseconds at
// the switch-over) or cold (an off or saved VM's files copied), without
// shared storage, over the hosts' mutual-TLS API for control and QEMU's
// own TLS for data.
//
// The source host drives; the target answers on /1.0/migrations:
//
//  1. create: the target checks the VM (its configuration as an import is
//     checked, its name and ID free, its machine type, CPU model and QEMU
//     version runnable here) and makes a staging directory;
//  2. files: the source sends the files that do not change while the VM
//     runs (backing chains, checkpoint states, NVRAM, kernel, initrd,
//     checkpoints.json, tracking.json) or, cold, all of them;
//  3. prepare: the target puts the VM in place, locked, and (live) creates
//     the top images over the same chains and starts QEMU waiting, with its
//     disks served over NBD;
//  4. (live) the source mirrors its top images and sends its memory
//     (internal/machine); its guest stops at the switch-over;
//  5. commit: the target records the commit durably, then runs the VM; the
//     source then ends its QEMU and removes the VM's files (or keeps them
//     with keep_source, as a VM that is off).
//
// A VM never runs on two hosts: the target runs it only once told to
// commit, and the source runs it again only when the target answered that
// it did not commit (or never heard of the migration: a target forgets an
// uncommitted migration when it aborts it, also on restart, and keeps
// committed ones on disk). When the target cannot be reached after the
// switch-over, the move is in doubt: the source keeps its guest stopped and
// asks again until the target answers. A target that hears nothing for
// IdleTimeout aborts on its own.
package migration
