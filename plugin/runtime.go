package plugin

// PrepareRuntime (contract version 2): create and start the job's
// instance, then wait until it accepts an exec. The whole job's other
// phases: stage.go, run.go, artifacts.go, cleanup.go, sweep.go.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// wholeJobEndpoint returns the pool and the Incus endpoint of a job.
func (e *Executor) wholeJobEndpoint(ctx context.Context, r shared.Remote) (*sshpool.Pool, *incusEndpoint, error) {
	pool, err := e.sshPool()
	if err != nil {
		return nil, nil, err
	}
	ep, err := e.endpoint(ctx, pool, r)
	if err != nil {
		return nil, nil, err
	}
	return pool, ep, nil
}

// PrepareRuntime creates and starts the job's instance (contract v2,
// docs/contract.md): the image alias looked up, a stale instance of the same
// name force-deleted when its labels say it is this job's (another owner's
// is an ErrConflict, see deleteOwnInstance), the remote artifacts dir emptied, one create request
// carrying type, profiles, limits, labels and the devices ConfigureDevices
// would plan, a start, and an exec of `true` until it succeeds. A dry run
// looks up the alias and plans, and changes nothing; it plans the snapshot
// device from where the snapshot dir will be once the earlier phases
// created it (devices.BuildAhead), so that a new run's dry run succeeds.
//
// On a cluster the instance is created on remote.member (?target=, with
// user.pikaci.member and cluster.evacuate=stop). When the member refuses
// the create (nothing created) or does not answer it in time (it may
// land later), the member is marked down and the job placed again, at
// most maxReplacements times: directories and snapshot on the new member,
// then the create there. The result's placement names every try.
func (e *Executor) PrepareRuntime(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	r := req.Job.Remote
	if !r.IsCluster() {
		return e.prepareRuntimeOn(ctx, req)
	}
	if r.Member == "" {
		return shared.RuntimeResult{}, errNotPlaced("PrepareRuntime")
	}
	place := &shared.Placement{Member: r.Member, Reason: "placed by PrepareDirectories"}
	for attempt := 0; ; attempt++ {
		res, err := e.prepareRuntimeOn(ctx, req)
		res.Placement = place
		if err == nil || req.DryRun || !refusedNothingCreated(err) || attempt >= maxReplacements {
			return res, err
		}
		member := req.Job.Remote.Member
		e.down.mark(member)
		place.Tried = append(place.Tried, shared.PlacementTry{Member: member, Error: err.Error()})
		next, perr := e.replace(ctx, req.Job)
		if perr != nil {
			return res, errors.Join(err, fmt.Errorf("place job %s again: %w", shared.Show(req.Job.Job.ID), perr))
		}
		req.Job.Remote.Member = next.Member
		place.Member, place.Reason = next.Member, next.Reason
	}
}

// replace places the job again (the members marked down left out) and
// prepares its directories and stages its snapshot on the new member.
func (e *Executor) replace(ctx context.Context, job shared.WholeJob) (shared.Placement, error) {
	job.Remote.Member = ""
	res, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: job.JobSpec})
	if err != nil {
		return shared.Placement{}, err
	}
	if res.Placement == nil {
		return shared.Placement{}, fmt.Errorf("PrepareDirectories placed nothing")
	}
	job.Remote.Member = res.Placement.Member
	if job.Host.SnapshotDir != "" {
		if _, err := e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job}); err != nil {
			return *res.Placement, err
		}
	}
	return *res.Placement, nil
}

// prepareRuntimeOn is PrepareRuntime on one host, or one member.
func (e *Executor) prepareRuntimeOn(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	spec := req.Job.JobSpec
	if err := req.Job.CheckRuntime(); err != nil {
		return shared.RuntimeResult{}, err
	}
	rt := req.Job.Runtime.WithDefaults()
	l, err := devices.Check(spec)
	if err != nil {
		return shared.RuntimeResult{}, err
	}
	pool, ep, err := e.wholeJobEndpoint(ctx, spec.Remote)
	if err != nil {
		return shared.RuntimeResult{}, err
	}
	project := spec.Remote.Incus.ProjectOrDefault()
	c := ep.client

	// The Incus reads run alongside the device plan's remote reads.
	type incusRead struct {
		server      incus.Server
		fingerprint string
	}
	// A dry run comes before StageWorkspaceSnapshot created the snapshot
	// dir (on a new run, before its parent exists): it plans the device
	// from where the dir will be.
	build := devices.Build
	if req.DryRun {
		build = devices.BuildAhead
	}
	r, plan, err := planBesideWith(ctx, spec, build, shellRemote(pool, spec.Remote.SSHHost()), func(ctx context.Context) (incusRead, error) {
		var r incusRead
		var err error
		if r.server, err = ep.serverInfo(ctx); err != nil {
			return r, err
		}
		r.fingerprint, err = c.ImageAlias(ctx, project, rt.Image)
		if errors.Is(err, shared.ErrNotFound) {
			// LXD answers an alias in a project that does not exist as a
			// missing alias: say which is missing.
			if perr := c.Project(ctx, project); errors.Is(perr, shared.ErrNotFound) {
				return r, shared.Errorf(shared.ErrNotFound, "remote.incus.project", project,
					"project %s does not exist on host %s: create it first (incus project create %s; lxc on LXD): %w",
					shared.Show(project), shared.Show(spec.Remote.Host), project, perr)
			}
			err = shared.Errorf(shared.ErrNotFound, "runtime.image", rt.Image,
				"image %s is not in project %s on host %s: import it first (incus image import … --alias %s --project %s): %w",
				shared.Show(rt.Image), shared.Show(project), shared.Show(spec.Remote.Host), rt.Image, project, err)
		}
		return r, err
	})
	if err != nil {
		return shared.RuntimeResult{}, err
	}
	planned, warnings := plan.Config(devices.Target{
		VirtualMachine: rt.InstanceType == shared.InstanceTypeVirtualMachine,
		VirtiofsBus:    r.server.HasExtension(devices.ExtensionVirtiofsBus),
	})
	now := time.Now().UTC()
	nonce, err := newNonce()
	if err != nil {
		return shared.RuntimeResult{}, err
	}
	// One run of the job at a time: a live one (fresh heartbeat) refuses
	// this one before anything changes, dry run or not.
	if err := checkLive(ctx, c, project, l.Instance, now); err != nil {
		return shared.RuntimeResult{}, fmt.Errorf("prepare runtime of job %s: %w", shared.Show(l.JobID), err)
	}
	res := shared.RuntimeResult{
		Instance: l.Instance,
		Project:  project,
		Image:    shared.Image{Project: project, Alias: rt.Image, Fingerprint: r.fingerprint},
		Type:     rt.InstanceType,
		Profiles: append([]string{shared.DefaultProfile}, rt.Profiles...),
		Config: map[string]string{
			"limits.cpu":          strconv.Itoa(rt.Limits.CPU),
			"limits.memory":       rt.Limits.Memory,
			shared.LabelRun:       l.RunID,
			shared.LabelJob:       l.JobID,
			shared.LabelCreated:   now.Format(time.RFC3339),
			shared.LabelNonce:     nonce,
			shared.LabelHeartbeat: now.Format(time.RFC3339),
		},
		Devices:  planned,
		Warnings: warnings,
		DryRun:   req.DryRun,
	}
	create := incus.CreateRequest{
		Name: l.Instance, Type: res.Type, Alias: rt.Image, Profiles: res.Profiles, Config: res.Config, Devices: res.Devices,
	}
	if spec.Remote.IsCluster() {
		res.Config[shared.LabelMember] = spec.Remote.Member
		// LXD 5.0.2's evacuation crashes the member on an instance with a
		// host-path disk unless it is stopped in place.
		res.Config["cluster.evacuate"] = "stop"
		create.Target, create.SendTimeout = spec.Remote.Member, incus.TargetedCreateSendTimeout
	}
	if req.DryRun {
		return res, nil
	}
	defer e.preparing(leaseKey(spec.Remote.Host, project, l.Instance))()

	if res.StaleDeleted, err = deleteOwnInstance(ctx, c, project, l.Instance, l.RunID, l.JobID); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: delete the stale instance: %w", shared.Show(l.JobID), err)
	}
	if res.StaleDeleted {
		msg := fmt.Sprintf("deleted the stale instance %s of an earlier run of job %s (no heartbeat for %s: its runner died or lost its connection)",
			shared.Show(l.Instance), shared.Show(l.JobID), shared.StaleAfter)
		e.log.Warn(msg)
		res.Warnings = append(res.Warnings, msg)
	}
	if _, err := pool.Run(ctx, spec.Remote.SSHHost(), emptyDirCommand(l.WorkDir, l.ArtifactsDir)); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: empty the artifacts dir %s: %w", shared.Show(l.JobID), shared.Show(l.ArtifactsDir), err)
	}
	if err := c.CreateInstance(ctx, project, create); err != nil {
		if ctx.Err() != nil {
			e.unsureCreate(leaseKey(spec.Remote.Host, project, l.Instance))
		}
		return res, fmt.Errorf("prepare runtime of job %s: %w", shared.Show(l.JobID), err)
	}
	// From here on a failure leaves the instance to Cleanup; until then,
	// the heartbeat says this run lives.
	e.hold(leaseKey(spec.Remote.Host, project, l.Instance), nonce, c, project, l.Instance)
	if err := c.Start(ctx, project, l.Instance); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: %w", shared.Show(l.JobID), withLogTail(ctx, c, project, l.Instance, res.Type, err))
	}
	if err := waitReady(ctx, c, project, l.Instance, time.Duration(rt.ReadyTimeoutSecs)*time.Second); err != nil {
		return res, err
	}
	return res, nil
}

// logTailTimeout bounds reading an instance's log after its start failed.
const logTailTimeout = 10 * time.Second

// withLogTail adds to a start's error the end of the instance's own log
// (lxc.log, qemu.log), which says why it did not start where the daemon
// says only "forkstart … exit status 1". The log is hostile content (the
// guest's processes write to it): shown with shared.Show, bounded. When
// the daemon did not answer the start (no *incus.APIError with a status),
// or the log cannot be read, the error is as it was; so it is when ctx
// ended.
func withLogTail(ctx context.Context, c *incus.Client, project, name, typ string, err error) error {
	var apiErr *incus.APIError
	if ctx.Err() != nil || !errors.As(err, &apiErr) || apiErr.StatusCode == 0 {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, logTailTimeout)
	defer cancel()
	file := incus.LogFile(typ)
	tail, lerr := c.LogTail(lctx, project, name, file)
	if lerr != nil || tail == "" {
		return err
	}
	return fmt.Errorf("%w; %s of instance %s ends with: %s", err, file, name, shared.Show(tail))
}

// emptyDirCommand empties dir, a dir below workDir (creating it when
// missing), in one command, every path quoted. Before it touches anything
// it checks that dir resolves to the same place below the resolved work
// dir: a link planted on the way (jobs/<job> -> someone's home) is
// refused, not emptied.
func emptyDirCommand(workDir, dir string) string {
	q := layout.Quote(dir)
	rel := layout.OwnPlace(workDir, "", dir) // below the resolved work dir, "$w"
	qw := layout.Quote(workDir)
	return "set -euo pipefail; w=$(readlink -e -- " + qw + ") || { printf 'the work dir %s does not exist\\n' " + qw + " >&2; exit 3; }; d=$(readlink -m -- " + q + "); e=${w%/}/" + layout.Quote(rel) +
		"; if [ \"$d\" != \"$e\" ]; then printf '%s resolves to %s, not to %s: a link on the way, left alone\\n' " + q + " \"$d\" \"$e\" >&2; exit 3; fi" +
		"; mkdir -p -- " + q + "; find " + q + " -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +"
}

// waitReady execs `true` in the instance, backing off from
// shared.ReadyProbeFirst to shared.ReadyProbeMax, until it exits 0 or limit passes.
func waitReady(ctx context.Context, c *incus.Client, project, name string, limit time.Duration) error {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	delay := shared.ReadyProbeFirst
	var last error
	for {
		code, err := c.Exec(rctx, project, name, incus.ExecRequest{Command: []string{"true"}})
		if err == nil && code == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("`true` exited %d", code)
		}
		if rctx.Err() == nil || last == nil {
			last = err
		}
		t := time.NewTimer(delay)
		select {
		case <-rctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return fmt.Errorf("instance %s: waiting for it to accept an exec: %w", shared.Show(name), ctx.Err())
			}
			return shared.Errorf(shared.ErrUnavailable, "runtime.ready_timeout_secs", strconv.Itoa(int(limit/time.Second)),
				"instance %s in project %s did not accept an exec within runtime.ready_timeout_secs (waited %s): last attempt: %w",
				shared.Show(name), shared.Show(project), time.Since(start).Round(time.Millisecond), last)
		case <-t.C:
		}
		delay = min(2*delay, shared.ReadyProbeMax)
	}
}
