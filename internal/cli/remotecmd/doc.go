// Package remotecmd is the commands that connect hosts: 'hv remote' (the hosts
// this client talks to), 'hv trust' (the clients a host trusts) and 'hv peer'.
package remotecmd
