package plugin

// Cleanup (contract version 2): force-delete the job's instance, only when
// its labels say it is this job's.

import (
	"context"
	"errors"
	"fmt"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// Cleanup force-deletes the job's instance; an instance already gone is a
// success (Deleted false). One of the job's name whose labels are not this
// job's is left alone: ErrConflict (see deleteOwnInstance).
func (e *Executor) Cleanup(ctx context.Context, req shared.CleanupRequest) (shared.CleanupResult, error) {
	spec := req.Job.JobSpec
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.CleanupResult{}, err
	}
	_, ep, err := e.wholeJobEndpoint(ctx, spec.Remote)
	if err != nil {
		return shared.CleanupResult{Instance: l.Instance}, err
	}
	deleted, err := deleteOwnInstance(ctx, ep.client, spec.Remote.Incus.ProjectOrDefault(), l.Instance, l.RunID, l.JobID)
	if err != nil && spec.Remote.IsCluster() && spec.Remote.Member != "" && errors.Is(err, shared.ErrUnavailable) {
		return shared.CleanupResult{Instance: l.Instance}, fmt.Errorf(
			"clean up job %s: instance %s stays on member %s, which does not answer; Sweep removes it once the member is back: %w",
			shared.Show(l.JobID), shared.Show(l.Instance), shared.Show(spec.Remote.Member), err)
	}
	if err != nil {
		return shared.CleanupResult{Instance: l.Instance}, fmt.Errorf("clean up job %s: %w", shared.Show(l.JobID), err)
	}
	return shared.CleanupResult{Instance: l.Instance, Deleted: deleted}, nil
}

// deleteOwnInstance force-deletes the instance name only when its labels
// say it is this job's: the name is 48 bits of a hash of "<run id>:<job
// id>", and ids may hold ':' (run "a:b" job "c" and run "a" job "b:c" share
// a name), so another job's live instance, or one someone else made, can
// carry it. Such an instance is refused with ErrConflict and kept. One
// already gone is (false, nil).
func deleteOwnInstance(ctx context.Context, c *incus.Client, project, name, runID, jobID string) (bool, error) {
	inst, err := c.Instance(ctx, project, name)
	if errors.Is(err, shared.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	gotRun, runOK := inst.Config[shared.LabelRun]
	gotJob, jobOK := inst.Config[shared.LabelJob]
	if !runOK || !jobOK || gotRun != runID || gotJob != jobID {
		return false, shared.Errorf(shared.ErrConflict, "instance", name,
			"instance %s in project %s is not this job's: its labels are %s=%s %s=%s, this job's %s=%s %s=%s; it is left alone (another job's, or not made by pikaci)",
			shared.Show(name), shared.Show(project), shared.LabelRun, labelShow(gotRun, runOK), shared.LabelJob, labelShow(gotJob, jobOK),
			shared.LabelRun, shared.Show(runID), shared.LabelJob, shared.Show(jobID))
	}
	return c.DeleteInstance(ctx, project, name)
}

func labelShow(v string, ok bool) string {
	if !ok {
		return "(missing)"
	}
	return shared.Show(v)
}
