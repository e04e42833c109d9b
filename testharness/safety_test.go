package testharness_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/testharness"
)

// safetyRun selects the safety cases, version 1 and whole-job.
var safetyRun = regexp.MustCompile(`^safety-`)

// SafetyFaults lists each safety fault of the broken plugin with exactly
// the cases that catch it (result names) and what their failures say.
var SafetyFaults = []struct {
	Fault     string
	FailCases []string // exactly the safety cases that must fail
	WantAll   []string // each in some failure
	Allowed   []string // every failure contains one of these
	LongOnly  bool     // skipped under -short: it waits out a 30 s bound of the harness
}{
	{
		Fault:     "accept-unknown-host-key",
		FailCases: []string{"whole/safety-host-key-unknown"},
		WantAll:   []string{"the plugin logged in to a remote whose host key is not in known_hosts"},
		Allowed:   []string{"host key is not in known_hosts", "every call succeeded; want PrepareDirectories to fail"},
	},
	{
		Fault:     "trust-any-host-key",
		FailCases: []string{"whole/safety-host-key-changed", "whole/safety-host-key-unknown"},
		WantAll: []string{
			"the plugin logged in to a remote whose host key is not in known_hosts",
			"the plugin logged in to a remote whose host key differs from the one in known_hosts (the host key changed)",
		},
		Allowed: []string{"host key is not in known_hosts", "the host key changed", "every call succeeded; want PrepareDirectories to fail"},
	},
	{
		Fault:     "ignore-strict-host-key-checking-no",
		FailCases: []string{"whole/safety-strict-host-key-checking-no"},
		WantAll:   []string{"though the SSH config says StrictHostKeyChecking no: such a config must be refused before dialling"},
		Allowed:   []string{"must be refused before dialling", "every call succeeded; want PrepareDirectories to fail"},
	},
	{
		Fault:     "ignore-connect-timeout",
		FailCases: []string{"whole/safety-silent-remote-connect-timeout"},
		WantAll:   []string{"the remote accepts TCP and never speaks, and the SSH config sets ConnectTimeout 2"},
		Allowed:   []string{"the remote accepts TCP and never speaks", "does not contain \"ConnectTimeout\"", "does not contain \"pika-build\""},
		LongOnly:  true,
	},
	{
		Fault:     "update-ignores-deadline",
		FailCases: []string{"safety-incus-hangs-mid-update"},
		WantAll:   []string{"ConfigureDevices did not return before the deadline the harness gave it (10s): the Incus API stopped answering once the update was sent"},
		Allowed:   []string{"the Incus API stopped answering once the update was sent", "does not contain \"may have been applied\""},
	},
	{
		Fault:     "read-unbounded-answer",
		FailCases: []string{"whole/safety-incus-endless-answer"},
		WantAll:   []string{"PrepareRuntime did not return before the deadline the harness gave it (30s): the Incus API answers with a body that never ends"},
		Allowed:   []string{"a body that never ends", "does not contain \"larger than\""},
		LongOnly:  true,
	},
	{
		Fault:     "wait-for-output-end",
		FailCases: []string{"whole/safety-guest-holds-output"},
		WantAll:   []string{"RunJob did not return before the deadline the harness gave it (30s): the case's bound_secs"},
		Allowed:   []string{"RunJob did not return before the deadline", "RunJob failed", "still runs in the guest after RunJob returned"},
		LongOnly:  true,
	},
}

// shortSafetyCases are the cases the control runs under -short: those
// the faults that -short runs run.
func shortSafetyCases() []string {
	var sel []string
	for _, f := range SafetyFaults {
		if !f.LongOnly {
			sel = append(sel, f.FailCases...)
		}
	}
	slices.Sort(sel)
	return slices.Compact(sel)
}

// TestBrokenSafetyPluginsFail: each safety fault fails exactly the safety
// cases that catch it, each failure naming the rule it broke; the control
// passes them all.
func TestBrokenSafetyPluginsFail(t *testing.T) {
	t.Parallel()
	var all []string
	cs, err := testharness.LoadCases(testharness.Config{Run: safetyRun})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		all = append(all, c.Name)
	}
	ws, err := testharness.LoadWholeCases(testharness.Config{Run: safetyRun})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ws {
		all = append(all, testharness.WholePrefix+c.Name)
	}
	if len(all) < 7 {
		t.Fatalf("%d safety cases, want at least 7: %q", len(all), all)
	}
	tests := append([]struct {
		Fault     string
		FailCases []string
		WantAll   []string
		Allowed   []string
		LongOnly  bool
	}{{Fault: ""}}, SafetyFaults...)
	for _, tt := range tests {
		name := tt.Fault
		if name == "" {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if tt.LongOnly && testing.Short() {
				t.Skip("-short: this fault waits out a 30 s bound of the harness; make test runs it")
			}
			// Under -short a fault runs only against the cases that catch
			// it, the control against every case a fault runs; make test runs
			// them all.
			cfg, all := testharness.Config{Plugin: brokenPlugin(t, tt.Fault), Run: safetyRun}, all
			if testing.Short() {
				sel := tt.FailCases
				if tt.Fault == "" {
					sel = shortSafetyCases()
				}
				cfg.Run, all = exactly(sel), sel
			}
			results, err := testharness.RunCases(t.Context(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ran, failed, failures []string
			for _, r := range results {
				if r.Skipped != "" {
					t.Errorf("case %s skipped: %s", r.Name, r.Skipped)
					continue
				}
				ran = append(ran, r.Name)
				if !r.Passed {
					failed = append(failed, r.Name)
				}
				for _, f := range r.Failures {
					failures = append(failures, r.Name+": "+f)
				}
			}
			if d := cmp.Diff(all, ran, byName); d != "" {
				t.Errorf("cases run (-want +got):\n%s", d)
			}
			if tt.Fault == "" {
				for _, f := range failures {
					t.Errorf("control failed: %s", f)
				}
				return
			}
			if d := cmp.Diff(tt.FailCases, failed, byName); d != "" {
				t.Errorf("failing cases (-want +got):\n%s\nfailures:\n%s", d, strings.Join(failures, "\n"))
			}
			for _, want := range tt.WantAll {
				if !slices.ContainsFunc(failures, func(f string) bool { return strings.Contains(f, want) }) {
					t.Errorf("no failure mentions %q; failures:\n%s", want, strings.Join(failures, "\n"))
				}
			}
			for _, f := range failures {
				if !slices.ContainsFunc(tt.Allowed, func(a string) bool { return strings.Contains(f, a) }) {
					t.Errorf("failure does not point at fault %s:\n%s", tt.Fault, f)
				}
			}
		})
	}
}
