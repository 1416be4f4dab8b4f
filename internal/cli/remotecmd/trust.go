package remotecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
)

// NewTrust returns the 'hv trust' command group.
func NewTrust(a *cli.App) *cobra.Command {
	c := cli.NewGroup("trust", "Choose the clients this host trusts on its network API",
		`The clients hvd trusts on its network API (hvd --listen), each a certificate
with a name and a role:

  admin      may do everything, as root on this host may
  read-only  may list and show, never change state, open consoles or exec

A client joins with a one-time token: 'hv trust add NAME' here prints one; on
the client, 'hv remote add REMOTE --token TOKEN' checks this host's
certificate against the token and enrolls its own. The token works once and
expires (1 hour by default). Anyone with the token can join as NAME: pass it
on as you would a password.

The unix socket needs no trust: it is for root on this host.`,
		newTrustAddCmd(a), newTrustListCmd(a), newTrustRemoveCmd(a))
	return c
}

func newTrustAddCmd(a *cli.App) *cobra.Command {
	var req api.TokenCreate
	cmd := &cobra.Command{
		Use:   "add NAME [--role admin|read-only] [--expires 1h]",
		Short: "Make a one-time token for a client to join this host as NAME",
		Long: `Make a join token for a client that will be trusted as NAME with --role, and
print it (once: hvd keeps only a hash). On the client:

  hv remote add REMOTE --token TOKEN

The token names this host's addresses (hvd --listen) and certificate, so
the client needs nothing else. It works once and expires after --expires;
'hv trust remove NAME' revokes it before it is used.`,
		Example: `  hv trust add laptop
  hv trust add monitoring --role read-only --expires 24h
  hv trust add host2 --role peer      # then on host2: hv peer add host1 --token TOKEN
  hv trust add ci -o json | jq -r .token`,
		Args: cli.ExactArgs(1, "the name the client will have on this host"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if !slices.Contains(api.Roles, req.Role) {
				return cli.Usagef(cmd, "--role %q: use %s", req.Role, strings.Join(api.Roles, ", "))
			}
			tok, err := a.Client().CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if a.Output != cli.OutTable {
				return a.Show(tok, nil)
			}
			// The token is the command's data: printed even with --quiet.
			fmt.Fprintln(a.Stdout, tok.Token)
			a.Warn("token for %s (role %s), valid once until %s; on the client: hv remote add REMOTE --token TOKEN",
				tok.Name, tok.Role, tok.ExpiresAt.Local().Format(time.DateTime))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Role, "role", api.RoleAdmin, "what the client may do: admin, read-only, or peer (another hv host: it may move VMs here, nothing else)")
	f.StringVar(&req.Expires, "expires", "", "how long the token is valid, e.g. 30m or 24h (default 1h, at most 168h)")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(
		api.Roles, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// trustRow is a trusted certificate or a pending token, as list prints them.
type trustRow struct {
	Name        string     `json:"name"`
	Role        string     `json:"role"`
	Status      string     `json:"status"` // trusted, or pending (a token)
	Fingerprint string     `json:"fingerprint,omitempty"`
	Subject     string     `json:"subject,omitempty"`
	AddedBy     string     `json:"added_by,omitempty"`
	AddedAt     time.Time  `json:"added_at"`
	LastSeen    *time.Time `json:"last_seen,omitempty"`
	ExpiresAt   time.Time  `json:"expires_at"` // the certificate's, or the token's
}

func trustRows(a *cli.App, ctx context.Context) ([]trustRow, error) {
	certs, err := a.Client().TrustedCertificates(ctx)
	if err != nil {
		return nil, err
	}
	toks, err := a.Client().Tokens(ctx)
	if err != nil {
		return nil, err
	}
	rows := []trustRow{}
	for _, c := range certs {
		rows = append(rows, trustRow{Name: c.Name, Role: c.Role, Status: "trusted", Fingerprint: c.Fingerprint,
			Subject: c.Subject, AddedBy: c.AddedBy, AddedAt: c.AddedAt, LastSeen: c.LastSeen, ExpiresAt: c.NotAfter})
	}
	for _, t := range toks {
		rows = append(rows, trustRow{Name: t.Name, Role: t.Role, Status: "pending", AddedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt})
	}
	slices.SortFunc(rows, func(x, y trustRow) int { return strings.Compare(x.Name, y.Name) })
	return rows, nil
}

func newTrustListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the trusted clients and the pending join tokens",
		Long: `List the client certificates this host trusts (STATUS trusted) and the join
tokens not used yet (STATUS pending), sorted by name. LAST SEEN is a trusted
client's last request; EXPIRES, the certificate's or the token's expiry.`,
		Example: "  hv trust list\n  hv trust list -o json",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := trustRows(a, cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now()
			return a.Show(rows, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tROLE\tSTATUS\tFINGERPRINT\tFROM\tLAST SEEN\tEXPIRES")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Role, r.Status, cli.Dash(cli.ShortFP(r.Fingerprint)),
						cli.Dash(r.AddedBy), cli.Ago(r.LastSeen, now), r.ExpiresAt.Local().Format(time.DateTime))
				}
			})
		},
	}
}

func newTrustRemoveCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm", "revoke"},
		Short:   "Stop trusting a client, or revoke its pending token",
		Long: `Stop trusting the client certificate named NAME: its next request is refused
(a console or session it has open now keeps running until it ends). If NAME
is a join token not used yet, revoke the token instead.`,
		Example:           "  hv trust remove laptop",
		Args:              cli.ExactArgs(1, "the trusted client's or the token's name"),
		ValidArgsFunction: completeTrust(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := a.Client().RemoveTrustedCertificate(cmd.Context(), args[0])
			if err == nil {
				a.Say("Removed %s: this host no longer trusts its certificate", args[0])
				return nil
			}
			if !errors.Is(err, client.ErrNotFound) {
				return err
			}
			if terr := a.Client().RevokeToken(cmd.Context(), args[0]); terr != nil {
				if errors.Is(terr, client.ErrNotFound) {
					return fmt.Errorf("no trusted client and no pending token is named %q; list them with: hv trust list", args[0])
				}
				return terr
			}
			a.Say("Revoked the join token for %s", args[0])
			return nil
		},
	}
}

// completeTrust completes the names of trusted clients and pending tokens.
func completeTrust(a *cli.App) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cli.CmdContext(cmd), cli.CompletionTimeout)
		defer cancel()
		rows, err := trustRows(a, ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, r := range rows {
			if strings.HasPrefix(r.Name, toComplete) {
				out = append(out, cobra.CompletionWithDesc(r.Name, r.Status+" "+r.Role))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
