package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// printable escapes what a terminal would interpret rather than show: C0
// and C1 control characters, DEL, invalid UTF-8 and other non-printing
// runes (bidi overrides, zero-width characters) become Go-style escapes
// (\x1b, \x07, \u009b, \u202e). Printable Unicode stays. Strings read from the database
// (stream ids and values inside errors, node names) are producer-written,
// and ESC or OSC sequences in them would otherwise clear or retitle the
// operator's terminal.
func printable(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || !strconv.IsPrint(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	for s = s[i:]; s != ""; {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case strconv.IsPrint(r):
			b.WriteString(s[:n])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[n:]
	}
	return b.String()
}

// jsonASCIIControls escapes, in JSON that encoding/json wrote, what it
// leaves raw but a terminal interprets: DEL, C1 controls and other
// non-printing runes (bidi overrides, zero-width characters) become \uXXXX
// escapes, which mean the same to a JSON reader. encoding/json escapes C0
// itself, and such runes can only occur inside its strings.
func jsonASCIIControls(js []byte) []byte {
	var b []byte
	for i := 0; i < len(js); {
		r, n := utf8.DecodeRune(js[i:])
		if r == '\n' || r == ' ' || (r != utf8.RuneError && strconv.IsPrint(r)) || (r < utf8.RuneSelf && r != 0x7f) {
			b = append(b, js[i:i+n]...)
		} else {
			for _, u := range utf16.Encode([]rune{r}) {
				b = fmt.Appendf(b, `\u%04x`, u)
			}
		}
		i += n
	}
	return b
}
