package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hvproject/hv/internal/cli"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/textsafe"
	"github.com/spf13/cobra"
)

func newEventsCmd(a *cli.App) *cobra.Command {
	var types []string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow hvd's events",
		Long: `Print hvd's events as they happen, one line each, until interrupted: VMs
created, deleted or changing state (vm), operations starting, progressing and
ending (operation), and hvd's log (log). --type keeps only some types.
-o json prints one JSON object per line; -o yaml one YAML document per event.`,
		Example: `  hv events
  hv events --type vm
  hv events -o json | jq -r 'select(.action == "state-changed") | .resource'`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := a.Client().Events(cmd.Context(), types, func(ev api.Event) error { return printEvent(a, ev) })
			if errors.Is(err, context.Canceled) {
				return nil // interrupted: the normal way to stop following
			}
			return err
		},
	}
	cmd.Flags().StringSliceVarP(&types, "type", "t", nil, "event types to show: vm, operation, log (repeatable or comma-separated)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(
		[]string{"vm", "operation", "log"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func printEvent(a *cli.App, ev api.Event) error {
	switch a.Output {
	case cli.OutJSON:
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.Stdout, "%s\n", b)
		return err
	case cli.OutYAML:
		b, err := cli.ToYAML(ev)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.Stdout, "---\n%s", b)
		return err
	}
	line := ev.Time.Local().Format(time.RFC3339) + " " + ev.Type
	for _, s := range []string{ev.Action, ev.Resource, ev.Message} {
		if s != "" {
			line += " " + s
		}
	}
	_, err := fmt.Fprintln(a.Stdout, textsafe.Line(line, 0)) // a message may quote a guest
	return err
}
