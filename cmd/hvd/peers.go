package main

import (
	"context"
	"net"

	"github.com/hvproject/hv/internal/feature/migration"
	"github.com/hvproject/hv/internal/peer"
)

// migrationPeers gives the migration feature the peer hosts hvd trusts:
// each a client over mutual TLS pinning the peer's certificate.
type migrationPeers struct{ p *peer.Peers }

func (m migrationPeers) Peer(ctx context.Context, name string) (migration.Peer, string, error) {
	c, err := m.p.Client(ctx, name)
	if err != nil {
		return nil, "", err
	}
	host, err := m.p.Host(name)
	if err != nil {
		return nil, "", err
	}
	return c, host, nil
}

// migrationListenHost is where this host's QEMUs listen for a VM moving
// here: the address of the first --listen, every address when that is
// unspecified, none (moves here refused) without --listen.
func migrationListenHost(listen []string) string {
	if len(listen) == 0 {
		return ""
	}
	h, _, err := net.SplitHostPort(listen[0])
	if err != nil || h == "" {
		return "0.0.0.0"
	}
	return h
}
