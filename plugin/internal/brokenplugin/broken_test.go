package main

import (
	"testing"

	"github.com/pikaci/vmexec/shared/layout"
)

// The quoting slip must be invisible on paths without a quote, so only a
// case with one can catch it.
func TestNaiveMkdir(t *testing.T) {
	tests := []struct {
		name     string
		dirs     []string
		sameAsOK bool
	}{
		{"plain", []string{"/var/tmp/pikaci/runs/run/jobs/job", "/var/tmp/pikaci/cache/cargo-home"}, true},
		{"space", []string{"/srv/ci work/runs"}, true},
		{"dollar-and-backslash", []string{`/srv/$HOME/a\b`}, true},
		{"single-quote", []string{"/srv/it's here"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := naiveMkdir(tt.dirs), layout.MkdirCommand(tt.dirs)
			if (got == ok) != tt.sameAsOK {
				t.Errorf("naive %q, correct %q: same=%v, want %v", got, ok, got == ok, tt.sameAsOK)
			}
		})
	}
}

func TestCheckFault(t *testing.T) {
	for _, f := range append([]string{""}, Faults...) {
		if err := checkFault(f); err != nil {
			t.Errorf("checkFault(%q): %v", f, err)
		}
	}
	if err := checkFault("quotng"); err == nil {
		t.Error("checkFault accepted an unknown fault")
	}
}
