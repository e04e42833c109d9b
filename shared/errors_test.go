package shared

import "testing"

func TestShowEscapesWhatALogWouldHide(t *testing.T) {
	for in, want := range map[string]string{
		"job":          `"job"`,
		"job\u202egpj": `"job\u202egpj"`,
		"a\u0085b":     `"a\u0085b"`,
		"a\u200fb":     `"a\u200fb"`,
		"a\xffb":       `"a\xffb"`,
		"é":            `"é"`,
		"a\nb":         `"a\nb"`,
	} {
		if got := Show(in); got != want {
			t.Errorf("Show(%q) = %s, want %s", in, got, want)
		}
	}
}

// Shorten cuts at n bytes, back to a character boundary, and says so.
func TestShortenCutsOnACharacterBoundary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"aéé", 4, "aé…"},           // é is 2 bytes: byte 4 is inside the second
		{"a\xff\xffb", 2, "a\xff…"}, // not UTF-8 there: cut where asked
	} {
		if got := Shorten(tc.in, tc.n); got != tc.want {
			t.Errorf("Shorten(%q, %d) = %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
