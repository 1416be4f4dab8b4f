package cli

import (
	"testing"
)

func TestSplitRemote(t *testing.T) {
	cases := []struct{ arg, remote, name string }{
		{"web", "", "web"},
		{"hv1:web", "hv1", "web"},
		{"local:web", "local", "web"},
		{":web", "", ":web"}, // no remote: the name as given, for hvd to refuse
		{"hv1:", "hv1", ""},
	}
	for _, c := range cases {
		r, n, ok := splitRemote(c.arg)
		if r != c.remote || n != c.name || ok != (c.remote != "") {
			t.Errorf("splitRemote(%q) = %q, %q, %v; want %q, %q", c.arg, r, n, ok, c.remote, c.name)
		}
	}
}

func TestFirstArg(t *testing.T) {
	for use, want := range map[string]string{
		"show NAME": "NAME", "list": "", "list [--repo DIR] [VM]": "[VM]",
		"prune --repo DIR --keep-last N [--keep-daily N] [--dry-run] [VM]": "[VM]",
		"restore --repo DIR BACKUP --as NEWNAME":                           "BACKUP", "exec NAME [flags] -- COMMAND [ARG...]": "NAME",
	} {
		if got := firstArg(use); got != want {
			t.Errorf("firstArg(%q) = %q, want %q", use, got, want)
		}
	}
}
