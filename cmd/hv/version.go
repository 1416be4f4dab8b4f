package main

import (
	"context"
	"io"
	"runtime/debug"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/spf13/cobra"
)

// versionInfo is what `hv version` prints.
type versionInfo struct {
	Client           string `json:"client"`
	Server           string `json:"server,omitempty"`
	ServerAPIVersion string `json:"server_api_version,omitempty"`
	ServerError      string `json:"server_error,omitempty"`
}

func newVersionCmd(a *cli.App) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show hv's and hvd's versions",
		Long: `Show the version of this hv binary, and of hvd with the API version it serves
when hvd can be reached (if not, the reason is shown and hv still exits 0).`,
		Example: "  hv version\n  hv version -o json",
		Args:    cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Client: clientVersion()}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			if h, err := a.Client().HostInfo(ctx); err != nil {
				v.ServerError = a.Describe(err)
			} else {
				v.Server, v.ServerAPIVersion = h.Version, h.APIVersion
			}
			return a.Show(v, func(w io.Writer) {
				server := v.Server + " (API " + v.ServerAPIVersion + ")"
				if v.ServerError != "" {
					server = "unavailable: " + v.ServerError
				}
				cli.KV(w, [2]string{"Client", v.Client}, [2]string{"Server", server})
			})
		},
	}
}

// clientVersion is the module version hv was built from, with its VCS revision if known.
func clientVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v
}
