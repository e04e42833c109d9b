package plugin

// Cleanup (contract version 2): force-delete the job's instance, only when
// its labels say it is this job's.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	project := spec.Remote.Incus.ProjectOrDefault()
	key := leaseKey(spec.Remote.Host, project, l.Instance)
	if err := e.settle(ctx, ep.client, key, project, l.Instance); err != nil {
		return shared.CleanupResult{Instance: l.Instance}, fmt.Errorf("clean up job %s: %w", shared.Show(l.JobID), err)
	}
	if err := e.ownInstance(ctx, ep.client, key, project, l.Instance); errors.Is(err, shared.ErrConflict) {
		// Another run's instance: not ours to delete. Our own is gone.
		e.release(key)
		return shared.CleanupResult{Instance: l.Instance}, fmt.Errorf("clean up job %s: %w", shared.Show(l.JobID), err)
	}
	deleted, err := deleteOwnInstance(ctx, ep.client, project, l.Instance, l.RunID, l.JobID)
	if err == nil {
		e.release(key)
	}
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
	return deleteWhenIdle(ctx, c, project, name, inst.Status != "Stopped")
}

// Retry delays of deleteWhenIdle: from the first, doubling up to the
// last.
const (
	deleteRetryFirst = 100 * time.Millisecond
	deleteRetryMax   = 2 * time.Second
)

// deleteWhenIdle force-deletes the instance, waiting for an operation in
// flight on it ("Instance is busy running a "create" operation", a stop
// that timed out, a daemon that did not answer) and trying again, until
// ctx ends; without a deadline on ctx, shared.CleanupTimeout bounds it.
// The error names the last refusal and the time tried.
//
// running says the caller's GET saw the instance running: it is
// force-stopped first, as a DELETE of a running instance is refused, a
// round trip for nothing (a failed stop is left to DeleteInstance, which
// stops and tries again on that refusal).
func deleteWhenIdle(ctx context.Context, c *incus.Client, project, name string, running bool) (bool, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, shared.CleanupTimeout)
		defer cancel()
	}
	// Stop trying a little before the caller's deadline, so that the
	// error says why.
	ctx, cancel := incus.WithMargin(ctx)
	defer cancel()
	if running {
		_ = c.ForceStop(ctx, project, name)
	}
	start := time.Now()
	delay := deleteRetryFirst
	for attempt := 1; ; attempt++ {
		deleted, err := c.DeleteInstance(ctx, project, name)
		if err == nil || !retryableDelete(err) {
			return deleted, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, fmt.Errorf("instance %s still there after %d attempts in %s: %w",
				shared.Show(name), attempt, time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
		delay = min(2*delay, deleteRetryMax)
	}
}

// retryableDelete: a refusal that may pass once what holds the instance
// ends (another operation on it, a stop that timed out, no answer).
func retryableDelete(err error) bool {
	if errors.Is(err, shared.ErrUnavailable) {
		return true
	}
	var ae *incus.APIError
	return errors.As(err, &ae) && (strings.Contains(ae.Message, "is busy running") || strings.Contains(ae.Message, "timed out"))
}

func labelShow(v string, ok bool) string {
	if !ok {
		return "(missing)"
	}
	return shared.Show(v)
}
