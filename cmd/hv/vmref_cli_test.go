package main

import (
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/cli"
)

// Every command that names a VM first takes REMOTE:VM; vm cp and the
// commands naming other things do not.
func TestVMArgsMarked(t *testing.T) {
	root := newRootCmd(&cli.App{Getenv: func(string) string { return "" }})
	want := map[string]string{
		"hv vm show": "first", "hv vm start": "all", "hv vm stop": "all", "hv vm delete": "all",
		"hv vm create": "first", "hv vm exec": "first", "hv vm console": "first", "hv vm set": "first",
		"hv vm nic add": "first", "hv vm disk list": "first", "hv vm kvp set": "first", "hv vm kvp": "first", "hv backup prune": "first",
		"hv vm export": "first", "hv checkpoint create": "first", "hv checkpoint list": "first",
		"hv backup create": "first", "hv backup list": "first",
		"hv vm list": "first", "hv vm cp": "", "hv vm import": "", "hv switch show": "", "hv remote show": "",
		"hv trust remove": "", "hv operation show": "", "hv backup restore": "",
	}
	for path, w := range want {
		c, _, err := root.Find(strings.Fields(path)[1:])
		if err != nil || c.CommandPath() != path {
			t.Errorf("%s: no such command (%v)", path, err)
			continue
		}
		if got := c.Annotations[cli.AnnVMArgs]; got != w {
			t.Errorf("%s: VM arguments %q, want %q", path, got, w)
		}
	}
}

func TestRemotePrefixUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "start", "hv1:a", "hv2:b"}, "one command talks to one host"},
		{[]string{"--remote", "hv1", "vm", "show", "hv2:a"}, "already talks to remote hv1"},
		{[]string{"vm", "show", "bad name:a"}, "remote name"},
		{[]string{"--remote", "bad/name", "vm", "list"}, "--remote"},
	}
	for _, c := range cases {
		r := hv(t, nil, "", c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("hv %v: exit %d, stderr %q; want 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func TestUnknownRemote(t *testing.T) {
	r := hv(t, nil, "", "vm", "show", "nowhere:web")
	if r.code != 1 || !strings.Contains(r.stderr, `no remote is named "nowhere"`) || !strings.Contains(r.stderr, "hv remote list") {
		t.Errorf("exit %d, stderr %q; want the unknown remote named, and how to list them", r.code, r.stderr)
	}
}
