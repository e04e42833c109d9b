package plugin

// Sweep (contract version 2): delete the leftover instances of a project.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// Sweep deletes the project's leftover instances: those labelled
// user.pikaci.run whose user.pikaci.created is older than req.OlderThan
// and whose run:job is not live. An instance without the label, or whose
// creation time is missing or unreadable, is never touched. A dry run only
// names them. A project that does not exist is an error of kind
// ErrNotFound naming it. Deletions go on after one fails; the errors are joined.
func (e *Executor) Sweep(ctx context.Context, req shared.SweepRequest) (shared.SweepResult, error) {
	if req.Remote.Host == "" {
		return shared.SweepResult{}, shared.Errorf(shared.ErrInvalidInput, "remote.host", "", "remote.host is empty")
	}
	if req.OlderThan < 0 {
		return shared.SweepResult{}, shared.Errorf(shared.ErrInvalidInput, "older_than", req.OlderThan.String(), "older_than %s: want 0 or more", req.OlderThan)
	}
	_, ep, err := e.wholeJobEndpoint(ctx, req.Remote)
	if err != nil {
		return shared.SweepResult{}, err
	}
	project := req.Remote.Incus.ProjectOrDefault()
	list, err := ep.client.ListInstances(ctx, project)
	if err != nil {
		return shared.SweepResult{}, err
	}
	if len(list) == 0 {
		// LXD lists a project that does not exist as empty (200 []):
		// "nothing to delete" would hide a wrong --project.
		if err := ep.client.Project(ctx, project); err != nil {
			if errors.Is(err, shared.ErrNotFound) {
				return shared.SweepResult{}, fmt.Errorf("sweep: project %s does not exist on host %s (incus project list shows those that do): %w",
					shared.Show(project), shared.Show(req.Remote.Host), err)
			}
			return shared.SweepResult{}, fmt.Errorf("sweep: project %s on host %s: %w", shared.Show(project), shared.Show(req.Remote.Host), err)
		}
	}
	res := shared.SweepResult{Deleted: []string{}, DryRun: req.DryRun, Unreachable: Unreachable(list)}
	victims := SweepVictims(list, req.Live, req.OlderThan, time.Now())
	if req.DryRun {
		res.Deleted = victims
		return res, nil
	}
	var errs []error
	for _, name := range victims {
		deleted, err := ep.client.DeleteInstance(ctx, project, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if deleted {
			res.Deleted = append(res.Deleted, name)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("sweep project %s on %s: %w", shared.Show(project), shared.Show(req.Remote.Host), err)
	}
	return res, nil
}

// Unreachable names, sorted, the instances a cluster lists without their
// config ("<name> on <member>"): their member does not answer, so their
// labels, and whether they are ours, are unknown until it is back.
func Unreachable(list []incus.InstanceInfo) []string {
	var out []string
	for _, inst := range list {
		if inst.Config == nil {
			out = append(out, inst.Name+" on "+inst.Location)
		}
	}
	slices.Sort(out)
	return out
}

// SweepVictims returns, sorted, the instances a sweep at now deletes.
func SweepVictims(list []incus.InstanceInfo, live []string, olderThan time.Duration, now time.Time) []string {
	keep := make(map[string]bool, len(live))
	for _, l := range live {
		keep[l] = true
	}
	var out []string
	for _, inst := range list {
		run, ok := inst.Config[shared.LabelRun]
		if !ok {
			continue
		}
		created, err := time.Parse(time.RFC3339, inst.Config[shared.LabelCreated])
		if err != nil || now.Sub(created) <= olderThan {
			continue
		}
		if keep[run+":"+inst.Config[shared.LabelJob]] {
			continue
		}
		out = append(out, inst.Name)
	}
	slices.Sort(out)
	return out
}
