package remotecmd

import (
	"fmt"
	"io"

	"github.com/hvproject/hv/internal/cli"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
)

// NewPeer returns the 'hv peer' command group.
func NewPeer(a *cli.App) *cobra.Command {
	return cli.NewGroup("peer", "Choose the other hv hosts this host talks to",
		`The peers of a host are the other hv hosts its hvd is a client of: the hosts
it moves VMs to (hv vm move VM --to PEER). A peer joins as a client does:
on the peer, 'hv trust add NAME' prints a one-time token; here,
'hv peer add PEER --token TOKEN' pins the peer's certificate and enrolls this
hvd's own (hvd --listen makes it), so the peer trusts this host as NAME.

Trust runs one way: for VMs to move both ways, add each host as the other's
peer.`,
		newPeerAddCmd(a), newPeerListCmd(a), newPeerShowCmd(a), newPeerRemoveCmd(a))
}

func newPeerAddCmd(a *cli.App) *cobra.Command {
	var req api.PeerAdd
	cmd := &cobra.Command{
		Use:   "add NAME [ADDRESS] --token TOKEN",
		Short: "Make another hv host a peer of this one, with a join token from it",
		Long: `Add the hv host that printed TOKEN ('hv trust add' on it) as this host's peer
NAME. hvd checks the peer's certificate against the token, enrolls its own
certificate there, and pins the peer's. ADDRESS (host:port of the peer's
hvd --listen) is needed only when the addresses in the token do not reach
the peer from here.`,
		Example: `  hv peer add host2 --token eyJ...
  hv peer add host2 10.0.0.2:8443 --token eyJ...`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if len(args) == 2 {
				req.Address = args[1]
			}
			if req.Token == "" {
				return cli.Usagef(cmd, "--token: required; on the peer, 'hv trust add NAME' prints one")
			}
			p, err := a.Client().AddPeer(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.Show(p, func(w io.Writer) {
				fmt.Fprintf(w, "Added peer %s at %s (fingerprint %s); it trusts this host as %s\n", p.Name, p.Address, cli.ShortFP(p.Fingerprint), p.TrustedAs)
			})
		},
	}
	cmd.Flags().StringVar(&req.Token, "token", "", "the join token printed by 'hv trust add' on the peer")
	return cmd
}

func newPeerListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the peers, each asked now whether it answers",
		Long: `List this host's peers, sorted by name. hvd asks each for its host
information now, in parallel: STATUS is online, or unreachable with the
reason in ERROR (a peer that moved address, or no longer trusts this host).`,
		Example: "  hv peer list\n  hv peer list -o json",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := a.Client().ListPeers(cmd.Context())
			if err != nil {
				return err
			}
			return a.Show(peers, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tADDRESS\tSTATUS\tVERSION\tFINGERPRINT\tERROR")
				for _, p := range peers {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Address, p.Status, cli.Dash(p.Version), cli.ShortFP(p.Fingerprint), cli.Dash(p.Error))
				}
			})
		},
	}
}

func newPeerShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a peer, asked now whether it answers",
		Long: `Show the peer named NAME: its address, the certificate fingerprint pinned
when it was added, the name this host has on it, and whether it answers now.`,
		Example: "  hv peer show host2 -o json",
		Args:    cli.ExactArgs(1, "the peer's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.Client().GetPeer(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.Show(p, func(w io.Writer) {
				fmt.Fprintf(w, "Name:\t%s\nAddress:\t%s\nFingerprint:\t%s\nTrusted as:\t%s\nStatus:\t%s\n", p.Name, p.Address, p.Fingerprint, p.TrustedAs, p.Status)
				if p.Error != "" {
					fmt.Fprintf(w, "Error:\t%s\n", p.Error)
				}
				if p.Version != "" {
					fmt.Fprintf(w, "Version:\t%s\nHostname:\t%s\n", p.Version, p.Hostname)
				}
			})
		},
	}
}

func newPeerRemoveCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Forget a peer",
		Long: `Forget the peer named NAME: this host no longer talks to it. The peer still
trusts this host's certificate until 'hv trust remove' there.`,
		Example: "  hv peer remove host2",
		Args:    cli.ExactArgs(1, "the peer's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.Client().RemovePeer(cmd.Context(), args[0]); err != nil {
				return err
			}
			a.Say("Removed peer %s", args[0])
			return nil
		},
	}
}
