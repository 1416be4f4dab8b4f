// Package clitest is a fake hvd for the tests of hv's command line: it serves
// the REST API on a unix socket from VMs held in memory, and records what it was asked.
package clitest
