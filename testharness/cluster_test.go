package testharness_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/testharness"
)

// clusterRun selects the cluster cases.
var clusterRun = regexp.MustCompile(`^cluster-`)

// ClusterFaults lists each cluster fault of the broken plugin with the
// cluster cases that catch it and what their failures say.
var ClusterFaults = []struct {
	Fault     string
	FailCases []string // exactly the cluster cases that must fail
	Short     []string // under -short, only these run
	WantAll   []string // each in some failure
	LongOnly  bool     // skipped under -short: it waits out a bound of the harness
}{
	{
		Fault: "ignore-member",
		FailCases: []string{"whole/cluster-affinity", "whole/cluster-member-hung-mid-job", "whole/cluster-member-lost", "whole/cluster-placement",
			"whole/cluster-replaced-after-hung-create", "whole/cluster-replaced-after-refused-create"},
		Short:   []string{"whole/cluster-placement"},
		WantAll: []string{`Missing source path "/var/tmp/pikaci/snapshots/h1/snapshot"`},
	},
	{
		Fault:     "trust-hung-create",
		FailCases: []string{"whole/cluster-replaced-after-hung-create"},
		WantAll:   []string{"PrepareRuntime did not return before the deadline the harness gave it (50s)"},
		LongOnly:  true,
	},
}

// TestBrokenClusterPluginsFail: each cluster fault of the broken plugin
// fails exactly the cluster cases that catch it, naming what went wrong;
// the control passes them all.
func TestBrokenClusterPluginsFail(t *testing.T) {
	t.Parallel()
	ws, err := testharness.LoadWholeCases(testharness.Config{Run: clusterRun})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, c := range ws {
		all = append(all, testharness.WholePrefix+c.Name)
	}
	if len(all) < 6 {
		t.Fatalf("%d cluster cases, want at least 6: %q", len(all), all)
	}
	tests := append([]struct {
		Fault     string
		FailCases []string
		Short     []string
		WantAll   []string
		LongOnly  bool
	}{{Fault: ""}}, ClusterFaults...)
	for _, tt := range tests {
		name := tt.Fault
		if name == "" {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if tt.LongOnly && testing.Short() {
				t.Skip("-short: this fault waits out the harness's 50 s deadline; make test runs it")
			}
			cfg, all, failCases := testharness.Config{Plugin: brokenPlugin(t, tt.Fault), Cases: "-", Run: clusterRun}, all, tt.FailCases
			if testing.Short() && tt.Fault == "" {
				// The control against the cases the faults run under
				// -short (TestOurPluginPassesEveryCase runs them all).
				var union []string
				for _, f := range ClusterFaults {
					switch {
					case f.LongOnly:
					case f.Short != nil:
						union = append(union, f.Short...)
					default:
						union = append(union, f.FailCases...)
					}
				}
				slices.Sort(union)
				union = slices.Compact(union)
				cfg.Run, all = exactly(union), union
			}
			if testing.Short() && tt.Fault != "" {
				sel := tt.FailCases
				if tt.Short != nil {
					sel = tt.Short
				}
				cfg.Run, all, failCases = exactly(sel), sel, sel
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
			if d := cmp.Diff(failCases, failed, byName); d != "" {
				t.Errorf("failing cases (-want +got):\n%s\nfailures:\n%s", d, strings.Join(failures, "\n"))
			}
			for _, want := range tt.WantAll {
				if !slices.ContainsFunc(failures, func(f string) bool { return strings.Contains(f, want) }) {
					t.Errorf("no failure mentions %q; failures:\n%s", want, strings.Join(failures, "\n"))
				}
			}
		})
	}
}
