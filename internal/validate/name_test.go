package validate

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/internal/errdefs"
)

func TestName(t *testing.T) {
	const hint = "; use letters, digits, '-', '_' or '.' (at most 63 characters)"
	tests := []struct {
		in, want string // want "" means valid
	}{
		{"web01", ""},
		{"a", ""},
		{"9lives", ""},
		{"db_primary.v2-test", ""},
		{strings.Repeat("x", 63), ""},
		{"", `name: is empty` + hint},
		{"a/b", `name: "a/b" contains '/'` + hint},
		{"a b", `name: "a b" contains a space` + hint},
		{"a..b", `name: "a..b" contains ".."` + hint},
		{"-a", `name: "-a" must start with a letter or digit` + hint},
		{".hidden", `name: ".hidden" must start with a letter or digit` + hint},
		{"a,b", `name: "a,b" contains ','` + hint},
		{"é", `name: "é" must start with a letter or digit` + hint},
		{"aé", `name: "aé" contains 'é'` + hint},
		{"a\x00", `name: "a\x00" contains '\x00'` + hint},
		{strings.Repeat("x", 64), `name: "` + strings.Repeat("x", 64) + `" is 64 characters long` + hint},
	}
	for _, tc := range tests {
		err := Name("name", tc.in)
		if tc.want == "" {
			if err != nil {
				t.Errorf("Name(%q) = %v, want nil", tc.in, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("Name(%q) = nil, want %q", tc.in, tc.want)
			continue
		}
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Name(%q) does not wrap ErrInvalid", tc.in)
		}
		if got := strings.TrimPrefix(err.Error(), "invalid input: "); got != tc.want {
			t.Errorf("Name(%q)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}
