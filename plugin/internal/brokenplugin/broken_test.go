package main

import (
	"os"
	"path/filepath"
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

// TestFaultFromFileBesideTheBinary: a binary built without a fault takes it
// from brokenplugin.fault beside it; one built with a fault ignores the
// file; without either it has none.
func TestFaultFromFileBesideTheBinary(t *testing.T) {
	dir := t.TempDir()
	exe := func() (string, error) { return filepath.Join(dir, "executor-remote-linux-vm"), nil }
	if f, err := faultFrom("", exe); err != nil || f != "" {
		t.Errorf("no file: fault %q, %v; want none", f, err)
	}
	if err := os.WriteFile(filepath.Join(dir, FaultFile), []byte(FaultQuoting+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := faultFrom("", exe); err != nil || f != FaultQuoting {
		t.Errorf("file naming %s: fault %q, %v", FaultQuoting, f, err)
	}
	if f, err := faultFrom(FaultMissingDir, exe); err != nil || f != FaultMissingDir {
		t.Errorf("built with %s: fault %q, %v", FaultMissingDir, f, err)
	}
}
