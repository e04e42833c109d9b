package host

import (
	"context"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

// placingJob is a fakeJob on a cluster: PrepareDirectories places the job
// on m1, PrepareRuntime re-places it on m2; it records the member each
// later phase was sent.
type placingJob struct {
	*fakeJob
	mu   sync.Mutex
	seen []string
}

func (p *placingJob) saw(phase string, r shared.Remote) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, phase+"@"+r.Member)
}

func (p *placingJob) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	p.saw("PrepareDirectories", req.Spec.Remote)
	res, err := p.fakeJob.PrepareDirectories(ctx, req)
	res.Placement = &shared.Placement{Member: "m1", Reason: "fewest pikaci jobs (0)"}
	return res, err
}

func (p *placingJob) StageWorkspaceSnapshot(ctx context.Context, req shared.StageRequest) (shared.StageResult, error) {
	p.saw("StageWorkspaceSnapshot", req.Job.Remote)
	return p.fakeJob.StageWorkspaceSnapshot(ctx, req)
}

func (p *placingJob) PrepareRuntime(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	p.saw("PrepareRuntime", req.Job.Remote)
	res, err := p.fakeJob.PrepareRuntime(ctx, req)
	res.Placement = &shared.Placement{Member: "m2", Reason: "fewest pikaci jobs (1)",
		Tried: []shared.PlacementTry{{Member: "m1", Error: "member \"m1\" refused the create"}}}
	return res, err
}

func (p *placingJob) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	p.saw("RunJob", req.Job.Remote)
	return p.fakeJob.RunJob(ctx, req, out)
}

func (p *placingJob) CollectArtifacts(ctx context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	p.saw("CollectArtifacts", req.Job.Remote)
	return p.fakeJob.CollectArtifacts(ctx, req)
}

func (p *placingJob) Cleanup(ctx context.Context, req shared.CleanupRequest) (shared.CleanupResult, error) {
	p.saw("Cleanup", req.Job.Remote)
	return p.fakeJob.Cleanup(ctx, req)
}

// The placement of the first phase goes with every later phase as
// remote.member, a re-placement replaces it, and the record keeps the
// final member with every try.
func TestRunWholeJobSendsThePlacedMemberAndRecordsThePlacement(t *testing.T) {
	job := testWholeJob(t)
	job.Remote.Incus.Cluster = &shared.Cluster{Members: map[string]shared.ClusterMember{"m1": {SSHHost: "h1"}, "m2": {SSHHost: "h2"}}}
	p := &placingJob{fakeJob: &fakeJob{}}
	rec, err := RunWholeJob(t.Context(), p, job, WholeJobOptions{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PrepareDirectories@", "StageWorkspaceSnapshot@m1", "PrepareRuntime@m1", "RunJob@m2", "CollectArtifacts@m2", "Cleanup@m2"}
	if diff := cmp.Diff(want, p.seen); diff != "" {
		t.Errorf("members sent (-want +got):\n%s", diff)
	}
	wantP := &shared.Placement{Member: "m2", Reason: "fewest pikaci jobs (1)",
		Tried: []shared.PlacementTry{{Member: "m1", Error: "member \"m1\" refused the create"}}}
	if diff := cmp.Diff(wantP, rec.Placement); diff != "" {
		t.Errorf("record placement (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantP, readRecord(t, job).Placement); diff != "" {
		t.Errorf("record file placement (-want +got):\n%s", diff)
	}
}
