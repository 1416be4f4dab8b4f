package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// GroupRunE lets a command that only groups others show its help, and calls an unknown
// subcommand a usage error (cobra would print help and succeed).
func GroupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only on its own path
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return &UsageError{Cmd: cmd.CommandPath(), Err: fmt.Errorf("%s", msg)}
}

// NewGroup returns a command that only holds subcommands.
func NewGroup(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Long: long, Args: cobra.ArbitraryArgs, RunE: GroupRunE}
	c.AddCommand(subs...)
	return c
}
