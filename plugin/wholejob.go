package plugin

// The whole job's instance phases (contract version 2): PrepareRuntime,
// RunJob, Cleanup and Sweep. StageWorkspaceSnapshot and CollectArtifacts
// live in stage.go and artifacts.go.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// terminateBound bounds what RunJob does after a timeout or a cancellation
// beyond the signals' own delays: the force stop and the last wait.
var terminateBound = 2 * time.Minute

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
// looks up the alias and plans, and changes nothing.
func (e *Executor) PrepareRuntime(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
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
		err         error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readc := make(chan incusRead, 1)
	go func() {
		var r incusRead
		r.server, r.err = ep.serverInfo(ctx)
		if r.err == nil {
			r.fingerprint, r.err = c.ImageAlias(ctx, project, rt.Image)
			if errors.Is(r.err, shared.ErrNotFound) {
				r.err = shared.Errorf(shared.ErrNotFound, "runtime.image", rt.Image,
					"image %s is not in project %s on host %s: import it first (incus image import … --alias %s --project %s): %w",
					shared.Show(rt.Image), shared.Show(project), shared.Show(spec.Remote.Host), rt.Image, project, r.err)
			}
		}
		readc <- r
	}()
	plan, planErr := devices.Build(ctx, spec, shellRemote(pool, spec.Remote.Host))
	r := <-readc
	if r.err != nil {
		return shared.RuntimeResult{}, r.err
	}
	if planErr != nil {
		return shared.RuntimeResult{}, planErr
	}
	planned, warnings := plan.Config(devices.Target{
		VirtualMachine: rt.InstanceType == shared.InstanceTypeVirtualMachine,
		VirtiofsBus:    r.server.HasExtension(devices.ExtensionVirtiofsBus),
	})
	res := shared.RuntimeResult{
		Instance: l.Instance,
		Project:  project,
		Image:    shared.Image{Project: project, Alias: rt.Image, Fingerprint: r.fingerprint},
		Type:     rt.InstanceType,
		Profiles: append([]string{shared.DefaultProfile}, rt.Profiles...),
		Config: map[string]string{
			"limits.cpu":        strconv.Itoa(rt.Limits.CPU),
			"limits.memory":     rt.Limits.Memory,
			shared.LabelRun:     l.RunID,
			shared.LabelJob:     l.JobID,
			shared.LabelCreated: time.Now().UTC().Format(time.RFC3339),
		},
		Devices:  planned,
		Warnings: warnings,
		DryRun:   req.DryRun,
	}
	if req.DryRun {
		return res, nil
	}

	if res.StaleDeleted, err = deleteOwnInstance(ctx, c, project, l.Instance, l.RunID, l.JobID); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: delete the stale instance: %w", shared.Show(l.JobID), err)
	}
	if _, err := pool.Run(ctx, spec.Remote.Host, emptyDirCommand(l.ArtifactsDir)); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: empty the artifacts dir %s: %w", shared.Show(l.JobID), shared.Show(l.ArtifactsDir), err)
	}
	if err := c.CreateInstance(ctx, project, incus.CreateRequest{
		Name: l.Instance, Type: res.Type, Alias: rt.Image, Profiles: res.Profiles, Config: res.Config, Devices: res.Devices,
	}); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: %w", shared.Show(l.JobID), err)
	}
	// From here on a failure leaves the instance to Cleanup.
	if err := c.Start(ctx, project, l.Instance); err != nil {
		return res, fmt.Errorf("prepare runtime of job %s: %w", shared.Show(l.JobID), err)
	}
	if err := waitReady(ctx, c, project, l.Instance, time.Duration(rt.ReadyTimeoutSecs)*time.Second); err != nil {
		return res, err
	}
	return res, nil
}

// emptyDirCommand empties dir (creating it when missing) in one command,
// every path quoted.
func emptyDirCommand(dir string) string {
	q := layout.Quote(dir)
	return "set -euo pipefail; mkdir -p -- " + q + "; find " + q + " -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +"
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

// RunJob runs the job's command in its instance (contract v2,
// docs/contract.md): stdin closed, stdout and stderr forwarded to out as they
// arrive, the exit code as the result. On command.timeout_secs, a cancellation
// or a failing sink the job gets SIGTERM, SIGKILL shared.KillGrace later, and
// the instance is force-stopped when the output is still open
// shared.ForceStopGrace after that.
func (e *Executor) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	spec := req.Job.JobSpec
	if err := req.Job.CheckCommand(); err != nil {
		return shared.RunResult{}, err
	}
	cmd := req.Job.Command.WithDefaults()
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.RunResult{}, err
	}
	_, ep, err := e.wholeJobEndpoint(ctx, spec.Remote)
	if err != nil {
		return shared.RunResult{}, err
	}
	project, c := spec.Remote.Incus.ProjectOrDefault(), ep.client
	fail := func(err error) (shared.RunResult, error) {
		return shared.RunResult{}, fmt.Errorf("run job %s in instance %s: %w", shared.Show(l.JobID), shared.Show(l.Instance), err)
	}

	// The job's clock starts before the checks: their file reads are
	// bounded (guestFileTimeout each) and count against timeout_secs.
	var timeout <-chan time.Time
	if cmd.TimeoutSecs > 0 {
		t := time.NewTimer(time.Duration(cmd.TimeoutSecs) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	if err := checkCwd(ctx, c, project, l.Instance, cmd.Cwd); err != nil {
		return fail(err)
	}
	env, group, err := userEnv(ctx, c, project, l.Instance, cmd)
	if err != nil {
		return fail(err)
	}

	sink := &chunkSink{out: out, failed: make(chan struct{})}
	p, err := c.StartExec(ctx, project, l.Instance, incus.ExecRequest{
		Command: cmd.Argv, Env: env, Cwd: cmd.Cwd, User: cmd.User, Group: group,
		Stdout: &streamWriter{sink: sink, stream: shared.Stdout},
		Stderr: &streamWriter{sink: sink, stream: shared.Stderr},
	})
	if err != nil {
		return fail(err)
	}
	defer p.Close()

	res := shared.RunResult{TimeoutSecs: cmd.TimeoutSecs}
	// bg outlives ctx: signals, the force stop and the last wait must still
	// go out after the host cancelled the call. Its clock starts when the
	// job ends or must be stopped, not now: a job may run for hours.
	var bg context.Context
	cancelBG := context.CancelFunc(func() {})
	defer func() { cancelBG() }()
	stopCtx := func() context.Context {
		if bg == nil {
			bg, cancelBG = context.WithTimeout(context.WithoutCancel(ctx), shared.KillGrace+shared.ForceStopGrace+terminateBound)
		}
		return bg
	}
	mainExited := p.MainExited()
	var grace <-chan time.Time // runs once the main process is gone
	var stopErr error
	for ended := false; !ended; {
		ended = true
		select {
		case <-p.Done():
		case <-timeout:
			res.TimedOut = true
			terminate(stopCtx(), c, p, project, l.Instance)
		case <-ctx.Done():
			terminate(stopCtx(), c, p, project, l.Instance)
			stopErr = fmt.Errorf("cancelled; the job was sent SIGTERM, then SIGKILL: %w", ctx.Err())
		case <-sink.failed:
			terminate(stopCtx(), c, p, project, l.Instance)
			stopErr = fmt.Errorf("the output could not be delivered; the job was stopped: %w", sink.err)
		case <-mainExited:
			// The main process is gone; children holding its output
			// would keep the exec open for as long as they live.
			mainExited = nil
			t := time.NewTimer(shared.ForceStopGrace)
			defer t.Stop()
			grace = t.C
			ended = false
		case <-grace:
			forceStop(stopCtx(), c, p, project, l.Instance)
		}
	}
	code, err := p.Wait(stopCtx())
	if stopErr != nil {
		return fail(stopErr)
	}
	if err != nil {
		return fail(err)
	}
	res.ExitCode = code
	return res, nil
}

// terminate sends SIGTERM, SIGKILL shared.KillGrace later, and force-stops
// the instance when the output is still open shared.ForceStopGrace after
// that. ctx bounds it all.
// When the main process is already gone (children hold the output), no
// signal can reach anyone: the force stop follows shared.ForceStopGrace
// later.
func terminate(ctx context.Context, c *incus.Client, p *incus.Process, project, name string) {
	select {
	case <-p.MainExited():
	default:
		_ = p.Signal(ctx, int(syscall.SIGTERM))
		if waitDone(ctx, p, shared.KillGrace) {
			return
		}
		_ = p.Signal(ctx, int(syscall.SIGKILL))
	}
	if waitDone(ctx, p, shared.ForceStopGrace) {
		return
	}
	forceStop(ctx, c, p, project, name)
}

// forceStop stops the instance, which ends every process of the job and
// with them the exec, and waits for the exec to end.
func forceStop(ctx context.Context, c *incus.Client, p *incus.Process, project, name string) {
	_ = c.ForceStop(ctx, project, name)
	select {
	case <-p.Done():
	case <-ctx.Done():
	}
}

// waitDone reports whether the exec ended within d.
func waitDone(ctx context.Context, p *incus.Process, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// chunkSink serialises the two streams' chunks into the job's sink.
type chunkSink struct {
	mu     sync.Mutex
	out    shared.OutputSink
	err    error
	failed chan struct{} // closed on the sink's first error
}

func (s *chunkSink) send(stream shared.Stream, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.out == nil {
		return nil
	}
	if err := s.out(shared.OutputChunk{Stream: stream, Data: slices.Clone(p)}); err != nil {
		s.err = err
		close(s.failed)
		return err
	}
	return nil
}

type streamWriter struct {
	sink   *chunkSink
	stream shared.Stream
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if err := w.sink.send(w.stream, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// maxSymlinkHops bounds following a cwd that is a symlink.
const maxSymlinkHops = 8

// guestFileTimeout bounds each of RunJob's checks that read the guest
// through the file API (the cwd's, /etc/passwd's): a FIFO there never
// answers. A variable for tests.
var guestFileTimeout = artifacts.FileTimeout

// unblockBound bounds unblockFIFO.
const unblockBound = 10 * time.Second

// guestReadTimeout is the error of a guest read that did not answer within
// guestFileTimeout, nil for any other failure. Before it returns it
// unblocks the read (see unblockFIFO).
func guestReadTimeout(ctx, fctx context.Context, c *incus.Client, project, name, field, value, path string, err error) error {
	if ctx.Err() != nil || !errors.Is(fctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	unblockFIFO(ctx, c, project, name, path)
	return shared.Errorf(shared.ErrUnavailable, field, value,
		"%s did not answer within %s in the guest (a FIFO?): %w", shared.Show(path), guestFileTimeout, err)
}

// unblockFIFO opens path for writing and closes it at once, when it is a
// FIFO, so that the file API read we gave up on ends: on LXD 5.0 that
// read otherwise goes on in the server, and the instance's force stop
// (Cleanup) fails with "operation timed out" until it does. It needs a
// shell in the guest; without one nothing is lost but the stop.
func unblockFIFO(ctx context.Context, c *incus.Client, project, name, path string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unblockBound)
	defer cancel()
	_, _ = c.Exec(ctx, project, name, incus.ExecRequest{
		Command: []string{"sh", "-c", `[ -p "$1" ] && : > "$1"`, "sh", path},
		Stdout:  io.Discard, Stderr: io.Discard,
	})
}

// checkCwd refuses a working directory that is not a directory in the
// guest: Incus would silently run the command in / instead. Its reads are
// bounded by guestFileTimeout together.
func checkCwd(ctx context.Context, c *incus.Client, project, name, cwd string) error {
	fctx, cancel := context.WithTimeout(ctx, guestFileTimeout)
	defer cancel()
	p := cwd
	for range maxSymlinkHops {
		f, err := c.GetFile(fctx, project, name, p)
		if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.cwd", cwd, p, err); terr != nil {
			return fmt.Errorf("check command.cwd %s: %w", shared.Show(cwd), terr)
		}
		if errors.Is(err, shared.ErrNotFound) {
			return shared.Errorf(shared.ErrNotFound, "command.cwd", cwd, "command.cwd %s does not exist in the guest: %w", shared.Show(cwd), err)
		}
		if err != nil {
			return fmt.Errorf("check command.cwd %s: %w", shared.Show(cwd), err)
		}
		if f.Body != nil {
			f.Body.Close()
		}
		switch f.Type {
		case incus.FileTypeDirectory:
			return nil
		case incus.FileTypeSymlink:
			p = f.Target
			continue
		}
		return shared.Errorf(shared.ErrInvalidInput, "command.cwd", cwd, "command.cwd %s is a %s in the guest, not a directory", shared.Show(cwd), f.Type)
	}
	return shared.Errorf(shared.ErrInvalidInput, "command.cwd", cwd, "command.cwd %s: more than %d symlinks", shared.Show(cwd), maxSymlinkHops)
}

// maxPasswd bounds the guest's /etc/passwd read.
const maxPasswd = 4 << 20

const passwdPath = "/etc/passwd"

// userEnv returns the job's environment and gid. Incus sets HOME and USER
// only for uid 0; for another uid they come from the guest's /etc/passwd
// (as login would set them), unless command.env sets them, and the gid is
// the user's primary group. A uid without a passwd entry runs with gid =
// uid and without HOME or USER: nothing would be true to put there. The
// read is bounded by guestFileTimeout.
func userEnv(ctx context.Context, c *incus.Client, project, name string, cmd shared.Command) (map[string]string, int, error) {
	env := maps.Clone(cmd.Env)
	if env == nil {
		env = map[string]string{}
	}
	if cmd.User == 0 {
		return env, 0, nil
	}
	fctx, cancel := context.WithTimeout(ctx, guestFileTimeout)
	defer cancel()
	f, err := c.GetFile(fctx, project, name, passwdPath)
	if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.user", strconv.Itoa(cmd.User), passwdPath, err); terr != nil {
		return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, terr)
	}
	if errors.Is(err, shared.ErrNotFound) {
		return env, cmd.User, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, err)
	}
	if f.Body == nil {
		return env, cmd.User, nil
	}
	defer f.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(f.Body, maxPasswd))
	uid := strconv.Itoa(cmd.User)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || fields[2] != uid {
			continue
		}
		gid, err := strconv.Atoi(fields[3])
		if err != nil {
			gid = cmd.User
		}
		if _, ok := env["HOME"]; !ok && fields[5] != "" {
			env["HOME"] = fields[5]
		}
		if _, ok := env["USER"]; !ok && fields[0] != "" {
			env["USER"] = fields[0]
		}
		return env, gid, nil
	}
	if err := sc.Err(); err != nil {
		if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.user", strconv.Itoa(cmd.User), passwdPath, err); terr != nil {
			return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, terr)
		}
		return nil, 0, fmt.Errorf("look up uid %d in the guest's /etc/passwd: %w", cmd.User, err)
	}
	return env, cmd.User, nil
}

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

// Sweep deletes the project's leftover instances: those labelled
// user.pikaci.run whose user.pikaci.created is older than req.OlderThan
// and whose run:job is not live. An instance without the label, or whose
// creation time is missing or unreadable, is never touched. A dry run only
// names them. Deletions go on after one fails; the errors are joined.
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
	res := shared.SweepResult{Deleted: []string{}, DryRun: req.DryRun}
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
