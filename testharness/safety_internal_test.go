package testharness

import (
	"strings"
	"testing"
	"time"

	"github.com/pikaci/vmexec/testharness/cases"
)

// TestCheckSafetyBounds: a call slower than bound_secs fails the case, as
// does one that ran into its deadline; one within the bound does not.
func TestCheckSafetyBounds(t *testing.T) {
	s := &cases.Safety{BoundSecs: 10, DeadlineSecs: 30, SilentRemote: true, ConnectTimeout: 2}
	tests := []struct {
		name    string
		took    time.Duration
		expired bool
		want    string // "" for no failure
	}{
		{"within", 3 * time.Second, false, ""},
		{"slow", 12 * time.Second, false, "PrepareDirectories took 12.0s; it must return within 10s: the remote accepts TCP and never speaks, and the SSH config sets ConnectTimeout 2"},
		{"deadline", 30 * time.Second, true, "PrepareDirectories did not return before the deadline the harness gave it (30s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ck := &check{}
			tm := &timing{
				took:    map[string]time.Duration{cases.CallPrepareDirectories: tt.took},
				expired: map[string]bool{cases.CallPrepareDirectories: tt.expired},
			}
			checkSafety(ck, s, nil, tm, cases.CallPrepareDirectories)
			got := strings.Join(ck.failures, "\n")
			switch {
			case tt.want == "" && got != "":
				t.Errorf("failures %q, want none", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("failures %q, want one containing %q", got, tt.want)
			}
		})
	}
}
