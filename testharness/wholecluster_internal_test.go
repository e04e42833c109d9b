package testharness

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
)

// withoutCluster is our plugin describing itself without the cluster
// capability; refuse makes it refuse a cluster job as the contract says.
type withoutCluster struct {
	*plugin.Executor
	refuse bool
}

func (w withoutCluster) Describe(ctx context.Context) (shared.Info, error) {
	info, err := w.Executor.Describe(ctx)
	info.Capabilities = slices.DeleteFunc(info.Capabilities, func(c string) bool { return c == shared.CapabilityCluster })
	return info, err
}

func (w withoutCluster) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	if w.refuse && req.Spec.Remote.IsCluster() {
		return shared.PrepareResult{}, shared.Errorf(shared.ErrInvalidInput, "remote.incus.cluster", "", "remote.incus.cluster: this plugin runs jobs on single hosts only")
	}
	return w.Executor.PrepareDirectories(ctx, req)
}

// TestClusterCaseWithoutTheCapabilityWantsTheRefusal: a plugin that does
// not declare incus-cluster passes a cluster case by refusing the job,
// naming remote.incus.cluster, and fails it by running the job anyway.
func TestClusterCaseWithoutTheCapabilityWantsTheRefusal(t *testing.T) {
	ws, err := LoadWholeCases(Config{Run: regexp.MustCompile(`^cluster-placement$`)})
	if err != nil || len(ws) != 1 {
		t.Fatalf("cluster-placement: %d cases, %v", len(ws), err)
	}
	for _, tt := range []struct {
		name   string
		refuse bool
		want   string // "" to pass
	}{
		{"refuses", true, ""},
		{"runs it anyway", false, "PrepareDirectories accepted a job with remote.incus.cluster though the plugin does not declare the \"incus-cluster\" capability"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := plugin.New(nil)
			t.Cleanup(func() { _ = e.Close() })
			res := runWholeCase(t.Context(), withoutCluster{Executor: e, refuse: tt.refuse}, ws[0])
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
