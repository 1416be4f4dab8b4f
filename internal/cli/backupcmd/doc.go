// Package backupcmd is 'hv backup': full and incremental backups of VMs into a
// repository on this machine, their restore, verification and pruning.
package backupcmd
