package plugin

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// CollectArtifacts implements shared.JobExecutor (SPEC v2): it copies
// artifacts.path from the job's instance into <host.job_dir>/artifacts
// through the Incus file API (see package artifacts for the rules).
func (e *Executor) CollectArtifacts(ctx context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	spec := req.Job.JobSpec
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.CollectResult{}, err
	}
	if err := req.Job.CheckArtifacts(); err != nil {
		return shared.CollectResult{}, err
	}
	a := req.Job.ArtifactsOrDefault()
	pool, err := e.sshPool()
	if err != nil {
		return shared.CollectResult{}, err
	}
	ep, err := e.endpoint(ctx, pool, spec.Remote)
	if err != nil {
		return shared.CollectResult{}, err
	}
	// Collect from a running instance only: a stopped one has lost its
	// tmpfs (the default artifacts path is one in systemd images), and
	// reading it would report an empty success.
	inst, err := ep.client.Instance(ctx, spec.Remote.Incus.Project, l.Instance)
	if err != nil {
		return shared.CollectResult{}, fmt.Errorf("collect artifacts of job %s: %w", shared.Show(spec.Job.ID), err)
	}
	if inst.Status != "Running" {
		return shared.CollectResult{}, shared.Errorf(shared.ErrUnavailable, "instance", l.Instance,
			"collect artifacts of job %s: instance %s is %s, not running: what the job left in a tmpfs is gone, and the collection cannot run",
			shared.Show(spec.Job.ID), shared.Show(l.Instance), shared.Show(inst.Status))
	}
	dest := filepath.Join(spec.Host.JobDir, "artifacts")
	// Special files first, with one exec: the file API must never be
	// asked for a FIFO.
	special, warnings, err := listSpecial(ctx, ep.client, spec.Remote.Incus.Project, l.Instance, a.Path)
	if err != nil {
		return shared.CollectResult{}, fmt.Errorf("collect artifacts of job %s from %s: %w", shared.Show(spec.Job.ID), l.Instance, err)
	}
	src := guestFiles(ep, spec.Remote.Incus.Project, l.Instance, special)
	res, err := artifacts.Collect(ctx, src, a.Path, dest, a.MaxBytes, artifacts.Options{})
	res.Warnings = append(warnings, res.Warnings...)
	if err != nil {
		return res, fmt.Errorf("collect artifacts of job %s from %s: %w", shared.Show(spec.Job.ID), l.Instance, err)
	}
	return res, nil
}
