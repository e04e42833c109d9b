package shared

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

// showByTheDocs is the quoting rule as docs/contract.md ("Error messages")
// writes it down for plugin authors in any language, implemented from that
// text alone.
func showByTheDocs(v string) string {
	control := false
	for _, r := range v {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x200e || r == 0x200f ||
			(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			control = true
		}
	}
	if !control {
		return `"` + v + `"`
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r == ' ' || unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S):
			b.WriteRune(r)
		case strings.ContainsRune("\a\b\f\n\r\t\v", r):
			b.WriteString(map[rune]string{'\a': `\a`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`, '\v': `\v`}[r])
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestShowFollowsTheDocumentedQuotingRule checks every Unicode scalar value,
// in a value that needs no quoting and in one that does (a U+0085 beside
// it), against the rule the contract states: if Show and the text differ,
// a plugin written from the text would fail the cases.
func TestShowFollowsTheDocumentedQuotingRule(t *testing.T) {
	failures := 0
	for r := rune(0); r <= unicode.MaxRune && failures < 10; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue // surrogates are not scalar values: no UTF-8 string holds them
		}
		for _, v := range []string{"a" + string(r) + `"\`, "\u0085" + string(r)} {
			if got, want := Show(v), showByTheDocs(v); got != want {
				t.Errorf("Show(%+q) = %s, the documented rule gives %s", v, got, want)
				failures++
			}
		}
	}
}

// TestShowBareQuotesOnlyWhatMustBe: a plain value as it is; one holding a
// control character, or not UTF-8, as Show gives it.
func TestShowBareQuotesOnlyWhatMustBe(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"rm -rf '/w/runs/x'", "rm -rf '/w/runs/x'"},
		{"a\x1b]0;t\a", `"a\x1b]0;t\a"`},
		{"bidi\u202e", `"bidi\u202e"`},
		{"bad\xff", `"bad\xff"`},
	} {
		if got := ShowBare(tt.in); got != tt.want {
			t.Errorf("ShowBare(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
