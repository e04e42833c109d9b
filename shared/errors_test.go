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
