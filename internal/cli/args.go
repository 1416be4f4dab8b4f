package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

// Argument validators that report usage errors.

// ExactArgs accepts exactly n arguments; what names them in the error ("a VM name").
func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return Usagef(cmd, "%s takes %s (got %d argument%s)", cmd.CommandPath(), what, len(args), Plural(len(args)))
		}
		return nil
	}
}

// MinArgs accepts n arguments or more; what names them in the error.
func MinArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return Usagef(cmd, "%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// NoArgs accepts no arguments.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef(cmd, "%s takes no arguments (got %q)", cmd.CommandPath(), strings.Join(args, " "))
	}
	return nil
}

// Plural is "s" unless n is 1.
func Plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
