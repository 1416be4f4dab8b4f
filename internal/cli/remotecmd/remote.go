package remotecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/spf13/cobra"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/join"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
)

// NewRemote returns the 'hv remote' command group.
func NewRemote(a *cli.App) *cobra.Command {
	c := cli.NewGroup("remote", "Manage the remote hosts this client talks to",
		`A remote is another host's hvd, reached over the network with mutual TLS:
this client shows its own certificate, and checks that the host shows the
certificate whose fingerprint it pinned when it joined.

To join a host: there, an admin runs 'hv trust add NAME', which prints a
one-time token; here, 'hv remote add REMOTE --token TOKEN'. Then name the
remote with --remote REMOTE, as REMOTE:VM wherever a VM is named, or make it
the default with 'hv remote switch REMOTE'. "local" is this machine's hvd on
its unix socket.

The client keeps its key (0600), certificate and remotes in $HV_CONFIG_DIR,
else ~/.config/hv: client.key, client.crt and remotes.json.`,
		newRemoteAddCmd(a), newRemoteListCmd(a), newRemoteShowCmd(a), newRemoteRemoveCmd(a),
		newRemoteRenameCmd(a), newRemoteSwitchCmd(a))
	c.Aliases = []string{"remotes"}
	return cli.Annotate(c, cli.AnnNoHVD, "yes")
}

func newRemoteAddCmd(a *cli.App) *cobra.Command {
	var token string
	cmd := &cobra.Command{
		Use:   "add NAME [ADDRESS] --token TOKEN",
		Short: "Join a host with a token its admin made, and add it as a remote",
		Long: `Join another host's hvd: make this client's key and certificate if it has
none, connect to ADDRESS (host[:port], port 8443 by default; else each
address the token lists), check that the host presents the certificate the
token names (anything else is refused as a possible man-in-the-middle, and
the token's secret is not sent), and enroll this client's certificate with
the token. The token works once and expires; the host gives this client the
role its admin chose (admin or read-only).`,
		Example: `  # on the host hv1:   hv trust add laptop
  hv remote add hv1 --token hvjoin1.eyJmcCI6...
  hv remote add hv1 192.0.2.10:8443 --token hvjoin1.eyJmcCI6...
  hv --remote hv1 vm list`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return cli.Usagef(cmd, "%s takes a name and, optionally, an address", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := ""
			if len(args) == 2 {
				addr = args[1]
			}
			if token == "" {
				return cli.Usagef(cmd, "--token is required: the token the host's 'hv trust add' printed")
			}
			return addRemote(a, cmd.Context(), args[0], addr, token)
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "the join token the host's admin made (hv trust add)")
	return cmd
}

// addRemote joins a host and records it.
func addRemote(a *cli.App, ctx context.Context, name, addr, token string) error {
	dir, err := a.NeedConfigDir()
	if err != nil {
		return err
	}
	if err := cli.CheckRemoteName(name); err != nil {
		return err
	}
	cfg, err := cli.LoadRemotes(dir)
	if err != nil {
		return err
	}
	if _, taken := cfg.Remotes[name]; taken {
		return fmt.Errorf("remote name: %s is taken; choose another, or remove it first (hv remote remove %s)", name, name)
	}
	tok, err := trust.ParseToken(token)
	if err != nil {
		return err
	}
	addrs, err := join.Addresses(tok, addr)
	if err != nil {
		return err
	}
	id, err := tlsid.LoadOrCreate(cli.IdentityFiles(dir), cli.ClientName())
	if err != nil {
		return err
	}
	res, err := join.Enroll(ctx, id.Cert, tok, addrs)
	if err != nil && !trustedAlready(a, ctx, res, err) {
		return err
	}
	cfg.Remotes[name] = cli.RemoteEntry{Address: res.Address, Fingerprint: tok.Fingerprint, TrustedAs: res.Trusted.Name,
		Role: res.Trusted.Role, AddedAt: time.Now().UTC()}
	if err := cli.SaveRemotes(dir, cfg); err != nil {
		return err
	}
	a.Say("Added remote %s at %s (certificate %s); it trusts this client as %s, role %s.\nUse it with --remote %s, as %s:VM, or make it the default: hv remote switch %s",
		name, res.Address, tok.Fingerprint, res.Trusted.Name, res.Trusted.Role, name, name, name)
	return nil
}

// trustedAlready says whether a failed enrollment failed only because the
// host trusts this client's certificate already (a remote removed here and
// added again): then the remote works without the token.
func trustedAlready(a *cli.App, ctx context.Context, res join.Result, err error) bool {
	if !errors.Is(err, client.ErrConflict) || res.Client == nil {
		return false
	}
	if _, herr := res.Client.HostInfo(ctx); herr != nil {
		return false
	}
	a.Warn("the host trusts this client already (%s); the token was not used: its admin may revoke it (hv trust remove NAME)", a.Describe(err))
	return true
}

// remoteRow is one remote as list and show print it.
type remoteRow struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"` // the unix socket for local
	Fingerprint string    `json:"fingerprint,omitempty"`
	TrustedAs   string    `json:"trusted_as,omitempty"`
	Role        string    `json:"role,omitempty"`
	AddedAt     time.Time `json:"added_at,omitzero"`
	Default     bool      `json:"default"`
}

func remoteRows(a *cli.App, cfg cli.RemoteConfig) []remoteRow {
	def := cfg.Default
	if def == "" {
		def = cli.LocalRemote
	}
	rows := []remoteRow{{Name: cli.LocalRemote, Address: "unix:" + a.Socket, Role: api.RoleAdmin, Default: def == cli.LocalRemote}}
	for _, n := range cfg.Names() {
		r := cfg.Remotes[n]
		rows = append(rows, remoteRow{Name: n, Address: r.Address, Fingerprint: r.Fingerprint, TrustedAs: r.TrustedAs,
			Role: r.Role, AddedAt: r.AddedAt, Default: def == n})
	}
	return rows
}

func newRemoteListCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the remotes, the default marked",
		Long: `List the remotes in the client's configuration, local (this machine's hvd on
its unix socket) first: address, the start of the pinned certificate
fingerprint, the role the host gave this client, and the default (*), which
commands talk to when neither --remote nor REMOTE:VM chooses. It asks no host.`,
		Example: `  hv remote list
  hv remote list -o json`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cli.LoadRemotes(a.ConfigDir())
			if err != nil {
				return err
			}
			rows := remoteRows(a, cfg)
			return a.Show(rows, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tADDRESS\tFINGERPRINT\tROLE\tDEFAULT")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Address, cli.Dash(cli.ShortFP(r.Fingerprint)), cli.Dash(r.Role), map[bool]string{true: "*"}[r.Default])
				}
			})
		},
	}
}

func newRemoteShowCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a remote, and whether its host answers now",
		Long: `Show a remote: its address, the full pinned fingerprint, the name and role
the host trusts this client as, and whether the host answers now (asked for
its host information, with a 5 second limit).`,
		Example:           "  hv remote show hv1\n  hv remote show hv1 -o json",
		Args:              cli.ExactArgs(1, "one remote name"),
		ValidArgsFunction: completeRemoteArg(a, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := cli.LoadRemotes(a.ConfigDir())
			if err != nil {
				return err
			}
			var row *remoteRow
			for _, r := range remoteRows(a, cfg) {
				if r.Name == args[0] {
					row = &r
				}
			}
			if row == nil {
				return fmt.Errorf("no remote is named %q; list them with: hv remote list", args[0])
			}
			a.RemoteName = args[0]
			status := probe(a, cmd.Context())
			out := struct {
				remoteRow
				Status string `json:"status"`
			}{*row, status}
			return a.Show(out, func(w io.Writer) {
				cli.KV(w, [2]string{"Name", row.Name}, [2]string{"Address", row.Address}, [2]string{"Fingerprint", row.Fingerprint},
					[2]string{"Trusted as", row.TrustedAs}, [2]string{"Role", row.Role}, [2]string{"Default", cli.YesNo(row.Default)},
					[2]string{"Status", status})
			})
		},
	}
}

// probe asks the chosen hvd for its host information, briefly.
func probe(a *cli.App, ctx context.Context) string {
	if err := a.Connect(); err != nil {
		return "unusable: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h, err := a.Client().HostInfo(ctx)
	var answered *client.Error
	var impostor *client.FingerprintError
	switch {
	case errors.As(err, &answered):
		return "answers, but refuses this client: " + a.Describe(err)
	case errors.As(err, &impostor):
		return "refused: another certificate answers there: " + a.Describe(err)
	case err != nil:
		return "unreachable: " + a.Describe(err)
	}
	return fmt.Sprintf("online (host %s, hv %s)", h.Hostname, h.Version)
}

func newRemoteRemoveCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Forget a remote",
		Long: `Forget a remote here. Its host still trusts this client's certificate until
its admin removes it there (hv trust remove NAME). The default goes back to
local when it was this remote.`,
		Example:           "  hv remote remove hv1",
		Args:              cli.ExactArgs(1, "one remote name"),
		ValidArgsFunction: completeRemoteArg(a, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			return editRemotes(a, args[0], func(cfg *cli.RemoteConfig) (string, error) {
				delete(cfg.Remotes, args[0])
				if cfg.Default == args[0] {
					cfg.Default = ""
				}
				return fmt.Sprintf("Removed remote %s; its host still trusts this client until its admin removes it there", args[0]), nil
			})
		},
	}
}

func newRemoteRenameCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "rename OLD NEW",
		Short: "Rename a remote",
		Long: `Rename a remote here, e.g. to free its name or to write a shorter REMOTE:VM.
The host knows this client by the name its admin chose; that stays.`,
		Example:           "  hv remote rename hv1.example.org hv1",
		Args:              cli.ExactArgs(2, "the remote's name and its new name"),
		ValidArgsFunction: completeRemoteArg(a, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			return editRemotes(a, args[0], func(cfg *cli.RemoteConfig) (string, error) {
				if err := cli.CheckRemoteName(args[1]); err != nil {
					return "", err
				}
				if _, taken := cfg.Remotes[args[1]]; taken {
					return "", fmt.Errorf("remote name: %s is taken; choose another", args[1])
				}
				cfg.Remotes[args[1]] = cfg.Remotes[args[0]]
				delete(cfg.Remotes, args[0])
				if cfg.Default == args[0] {
					cfg.Default = args[1]
				}
				return fmt.Sprintf("Renamed remote %s to %s", args[0], args[1]), nil
			})
		},
	}
}

func newRemoteSwitchCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "switch NAME",
		Short: "Make a remote the default (local: the unix socket)",
		Long: `Make a remote the default: commands talk to it unless --remote, REMOTE:VM or
--socket chooses otherwise. 'hv remote switch local' goes back to this
machine's hvd.`,
		Example: `  hv remote switch hv1
  hv vm list            # hv1's VMs
  hv remote switch local`,
		Args:              cli.ExactArgs(1, "one remote name, or local"),
		ValidArgsFunction: completeRemoteArg(a, true),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == cli.LocalRemote {
				return editRemotes(a, "", func(cfg *cli.RemoteConfig) (string, error) {
					cfg.Default = ""
					return "The default is now local: this machine's hvd", nil
				})
			}
			return editRemotes(a, args[0], func(cfg *cli.RemoteConfig) (string, error) {
				cfg.Default = args[0]
				return fmt.Sprintf("The default is now remote %s", args[0]), nil
			})
		},
	}
}

// editRemotes changes remotes.json with edit, which must find the remote
// named name ("" for none), and says what it did.
func editRemotes(a *cli.App, name string, edit func(cfg *cli.RemoteConfig) (string, error)) error {
	dir, err := a.NeedConfigDir()
	if err != nil {
		return err
	}
	cfg, err := cli.LoadRemotes(dir)
	if err != nil {
		return err
	}
	if name == cli.LocalRemote {
		return fmt.Errorf("remote %s is this machine's hvd on its unix socket; it cannot be changed", cli.LocalRemote)
	}
	if _, ok := cfg.Remotes[name]; name != "" && !ok {
		return fmt.Errorf("no remote is named %q; list them with: hv remote list", name)
	}
	msg, err := edit(&cfg)
	if err != nil {
		return err
	}
	if err := cli.SaveRemotes(dir, cfg); err != nil {
		return err
	}
	a.Say("%s", msg)
	return nil
}

// completeRemoteArg completes a command's first argument with a remote name.
func completeRemoteArg(a *cli.App, withLocal bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.CompleteRemotes(withLocal)(cmd, args, toComplete)
	}
}
