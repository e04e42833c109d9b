package testharness_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/testharness"
)

// TestClusterCaseWithoutTheCapabilityWantsTheRefusal: a plugin that does
// not declare incus-cluster passes a cluster case by refusing the job,
// naming remote.incus.cluster (the broken plugin's single-host-only), and
// fails it by running the job anyway (ignore-cluster). Through the plugin
// binary: the harness links none of our plugin.
func TestClusterCaseWithoutTheCapabilityWantsTheRefusal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		fault string
		want  string // "" to pass
	}{
		{"single-host-only", ""},
		{"ignore-cluster", "PrepareDirectories accepted a job with remote.incus.cluster though the plugin does not declare the \"incus-cluster\" capability"},
	} {
		t.Run(tt.fault, func(t *testing.T) {
			t.Parallel()
			cfg := testharness.Config{Plugin: brokenPlugin(t, tt.fault), Cases: "-", Run: regexp.MustCompile(`^cluster-placement$`)}
			results, err := testharness.RunCases(t.Context(), cfg, nil)
			if err != nil || len(results) != 1 {
				t.Fatalf("cluster-placement: %d results, %v", len(results), err)
			}
			res := results[0]
			got := strings.Join(res.Failures, "\n")
			switch {
			case res.Skipped != "":
				t.Errorf("skipped: %s", res.Skipped)
			case tt.want == "" && !res.Passed:
				t.Errorf("failed: %s", got)
			case tt.want != "" && (res.Passed || !strings.Contains(got, tt.want)):
				t.Errorf("passed %v with failures %q; want a failure containing %q", res.Passed, got, tt.want)
			}
		})
	}
}
