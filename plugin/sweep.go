package plugin

// Sweep (contract version 2): delete the leftover instances of a project.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
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
	if req.WorkDir != "" {
		if err := layout.CheckAbsClean("work_dir", req.WorkDir); err != nil {
			return shared.SweepResult{}, err
		}
	}
	if err := shared.CheckLive(req.Live); err != nil {
		return shared.SweepResult{}, err
	}
	pool, ep, err := e.wholeJobEndpoint(ctx, req.Remote)
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
	now := time.Now()
	victims := SweepVictims(list, req.Live, req.OlderThan, now)
	var deleteErr error
	if req.DryRun {
		res.Deleted = victims
	} else {
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
			deleteErr = fmt.Errorf("sweep project %s on %s: %w", shared.Show(project), shared.Show(req.Remote.Host), err)
		}
	}
	// The disk is swept all the same; an instance not deleted keeps its
	// run live.
	return res, errors.Join(deleteErr, sweepDisks(ctx, pool, req, list, res.Deleted, now, &res))
}

// sweepDisks sweeps req.WorkDir, when set, on remote.host or, on a
// cluster, on each member's ssh_host, one command each, in member order.
// A member with instances it could not list (Unreachable) is left alone:
// which of its runs live is unknown. deleted are the instances this sweep
// deleted: their runs are not live.
func sweepDisks(ctx context.Context, pool *sshpool.Pool, req shared.SweepRequest, list []incus.InstanceInfo, deleted []string, now time.Time, res *shared.SweepResult) error {
	if req.WorkDir == "" {
		return nil
	}
	runs, sources := diskLive(list, req.Live, deleted, now)
	hosts, skipped := DiskHosts(req.Remote, req.WorkDir, list)
	res.Skipped = append(res.Skipped, skipped...)
	var errs []error
	for _, h := range hosts {
		if err := sweepDisk(ctx, pool, h, req.WorkDir, req.OlderThan, req.DryRun, runs, sources, res); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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

// DiskHosts returns the SSH hosts whose workDir a disk sweep visits:
// remote.host, or on a cluster each member's ssh_host once, in member
// order, but for a member with instances it could not list (their
// config is unknown), which is named in skipped instead.
func DiskHosts(remote shared.Remote, workDir string, list []incus.InstanceInfo) (hosts, skipped []string) {
	if !remote.IsCluster() {
		return []string{remote.Host}, nil
	}
	unknown := map[string]bool{}
	for _, inst := range list {
		if inst.Config == nil {
			unknown[inst.Location] = true
		}
	}
	members := remote.Incus.Cluster.Members
	// A host is left alone when any member on it did not list: two members
	// may share an ssh_host, and the silent one's live runs are unknown.
	unknownHost := map[string]bool{}
	for name := range unknown {
		if m, ok := members[name]; ok {
			unknownHost[m.SSHHost] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		h := members[name].SSHHost
		if unknown[name] {
			skipped = append(skipped, fmt.Sprintf("%s:%s: member %s did not list its instances, so which of its runs live is unknown", h, workDir, name))
			continue
		}
		if unknownHost[h] || slices.Contains(hosts, h) { // two members on one host: its disk once
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts, skipped
}
