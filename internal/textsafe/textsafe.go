// Package textsafe makes text that comes from outside hv's trust (a guest, an
// imported file, a remote peer) safe to store and to print on an operator's
// terminal: no control characters (an escape sequence can move the cursor,
// retitle the window or, with OSC 52, write the clipboard), valid UTF-8, and
// a bounded length.
package textsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// replacement stands in for each character that is removed.
const replacement = '\uFFFD'

// Line returns s as one printable line of at most max bytes (0: no limit):
// control characters, line breaks included, and invalid UTF-8 become U+FFFD,
// as do the bidirectional overrides that make text read other than it is.
func Line(s string, max int) string {
	return clean(s, max, false)
}

// Text is Line that keeps line breaks and tabs (command output, logs).
func Text(s string, max int) string {
	return clean(s, max, true)
}

func clean(s string, max int, multiline bool) string {
	if safe(s, multiline) && (max <= 0 || len(s) <= max) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				r = replacement
			}
		}
		if !allowed(r, multiline) {
			r = replacement
		}
		if max > 0 && b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

func safe(s string, multiline bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !allowed(r, multiline) {
			return false
		}
	}
	return true
}

func allowed(r rune, multiline bool) bool {
	switch {
	case multiline && (r == '\n' || r == '\t'):
		return true
	case unicode.IsControl(r): // C0, DEL and C1 (ESC, CSI, OSC...)
		return false
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
		return false
	}
	return true
}
