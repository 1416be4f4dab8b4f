// Package vmcmd is 'hv vm': creating, changing, running and moving virtual
// machines, their devices, guest integration, console and exec sessions.
package vmcmd
