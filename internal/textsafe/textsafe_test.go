package textsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web01.example", "web01.example"},
		{"ünïcode ok", "ünïcode ok"},
		{"evil\x1b]52;c;aGk=\x07host", "evil\uFFFD]52;c;aGk=\uFFFDhost"},
		{"a\nb\r\tc", "a\uFFFDb\uFFFD\uFFFDc"},
		{"\u009b31m", "\uFFFD31m"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{"abc\u202Eevil", "abc\uFFFDevil"},
	} {
		if got := Line(tc.in, 0); got != tc.want {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := Text("line1\nline2\t\x1b[2J", 0); got != "line1\nline2\t\uFFFD[2J" {
		t.Errorf("Text = %q", got)
	}
	if got := Line(strings.Repeat("é", 10), 5); got != "éé" {
		t.Errorf("Line with max 5 = %q", got)
	}
}

func FuzzLine(f *testing.F) {
	f.Add("host\x1b[31m", 16)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max % 4096
		got := Line(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 out of %q", s)
		}
		if max > 0 && len(got) > max {
			t.Fatalf("len %d > max %d", len(got), max)
		}
		for _, r := range got {
			if r < 0x20 || (r >= 0x7f && r < 0xa0) {
				t.Fatalf("control %U left in %q", r, got)
			}
		}
	})
}
