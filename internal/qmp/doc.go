// Package qmp is a client for the QEMU Machine Protocol on a unix socket.
//
// A Client multiplexes many concurrent commands over one connection: each
// command carries an "id" and answers are matched by it, so callers never wait
// on each other. Asynchronous events are fanned out to subscribers (see
// Subscribe); a slow or absent subscriber never stalls the connection.
package qmp
