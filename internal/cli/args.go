package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// Argument validators that report usage errors.

func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return Usagef(cmd, "%s takes %s (got %d argument%s)", cmd.CommandPath(), what, len(args), Plural(len(args)))
		}
		return nil
	}
}

func MinArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return Usagef(cmd, "%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef(cmd, "%s takes no arguments (got %q)", cmd.CommandPath(), strings.Join(args, " "))
	}
	return nil
}

func Plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
