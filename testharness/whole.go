package testharness

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

// SkipProtocol1 is why a whole-job case is skipped for a plugin that
// speaks only protocol 1: it cannot be asked for the whole job.
const SkipProtocol1 = "skipped: plugin speaks protocol 1"

type incusExec = incusfake.ExecRecord

// WholeCaseTimeout bounds the calls of one whole-job case (Cleanup has
// its own bound, shared.CleanupTimeout).
const WholeCaseTimeout = 3 * time.Minute

// WholePrefix begins the result name of every whole-job case.
const WholePrefix = "whole/"

// protocolOf is the protocol an executor speaks: what a *host.Plugin
// negotiated, or 2 for any other JobExecutor value.
func protocolOf(e shared.Executor) int {
	if p, ok := e.(interface{ Protocol() int }); ok {
		return p.Protocol()
	}
	if _, ok := e.(shared.JobExecutor); ok {
		return shared.ProtocolWholeJob
	}
	return shared.ProtocolVersion
}

// runWholeCase runs one whole-job case against e on a fresh virtual remote.
func runWholeCase(ctx context.Context, e shared.Executor, c *cases.WholeCase) (res Result) {
	res.Name = WholePrefix + c.Name
	je, ok := e.(shared.JobExecutor)
	if !ok || protocolOf(e) < shared.ProtocolWholeJob {
		res.Skipped = SkipProtocol1
		return res
	}
	if shared.IsLocalHost(c.Job.Remote.Host) {
		res.Skipped = "remote.host " + c.Job.Remote.Host + " runs on this machine, not on a virtual remote"
		return res
	}
	dir, err := os.MkdirTemp("", "conformance-whole-*")
	if err != nil {
		res.Failures = []string{err.Error()}
		return res
	}
	defer os.RemoveAll(dir)
	remote, err := StartWholeRemote(ctx, c, dir)
	if err != nil {
		res.Failures = []string{"harness: " + err.Error()}
		return res
	}
	defer remote.Close()
	ck := &check{}
	ctx, cancel := context.WithTimeout(ctx, WholeCaseTimeout)
	defer cancel()
	if c.Cluster != nil && !hasCapability(ctx, e, shared.CapabilityCluster) {
		// The job cannot be run; the contract's refusal is checked.
		runClusterRefusal(ctx, ck, je, remote)
		res.Failures = ck.failures
		res.Passed = len(ck.failures) == 0
		return res
	}
	wholeRun(ctx, ck, je, c, remote)
	res.Failures = ck.failures
	res.Passed = len(ck.failures) == 0
	return res
}

// outcome is what the calls of one whole job did.
type outcome struct {
	failedCall string
	err        error
	stage      shared.StageResult
	stageRan   bool
	run        shared.RunResult
	ran        bool
	collect    shared.CollectResult
	// On a cluster: the placement the phases returned, and the member
	// the snapshot was staged on.
	placement   *shared.Placement
	stageMember string

	mu             sync.Mutex
	stdout, stderr strings.Builder
	firstChunk     bool
	firstWhileRuns bool // the job's process still ran when the first chunk arrived
}

// wholeRun makes the whole job's calls in order, as a host does, and
// checks every want of the case.
func wholeRun(ctx context.Context, ck *check, e shared.JobExecutor, c *cases.WholeCase, r *WholeRemote) {
	t := &timing{}
	o := &outcome{}
	defer func() { checkSafety(ck, c.Safety, r.Remote, t, boundedCall(c)) }()
	if err := t.call(ctx, c.Safety, "Configure", func(ctx context.Context) error {
		return e.Configure(ctx, shared.Settings{SSHConfigPath: r.SSHConfig})
	}); err != nil {
		if !refusedConfig(c) {
			ck.failf("Configure with the virtual remote's SSH config: %v", err)
			return
		}
		// A plugin may refuse an SSH config it cannot trust as early as
		// Configure: that error stands for PrepareDirectories'.
		o.failedCall, o.err = cases.CallPrepareDirectories, err
		t.took[cases.CallPrepareDirectories] = t.took["Configure"]
		checkWholeError(ck, c, o)
		return
	}
	job := r.Job
	instance, snapDir := "", ""
	if l, err := layout.Derive(job.JobSpec); err == nil {
		instance, snapDir = l.Instance, l.SnapshotDir
	}
	argv := []string(nil)
	if job.Command != nil {
		argv = job.Command.Argv
	}
	localBefore, err := Tree(osTreeFS{}, r.LocalRoot, true)
	if err != nil {
		ck.failf("harness: %v", err)
		return
	}
	var snapParentBefore map[string]string

	calls := []struct {
		name string
		f    func(ctx context.Context) error
	}{
		{cases.CallPrepareDirectories, func(ctx context.Context) error {
			res, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: job.JobSpec})
			// The host sends the member with every later phase.
			if o.placement = mergePlacement(o.placement, res.Placement); o.placement != nil {
				job.Remote.Member = o.placement.Member
			}
			return err
		}},
		{cases.CallStage, func(ctx context.Context) error {
			o.stageMember = job.Remote.Member
			snapParentBefore = remoteTree(ck, r.memberFS(o.stageMember), path.Dir(snapDir))
			var err error
			o.stage, err = e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job})
			o.stageRan = err == nil
			return err
		}},
		{cases.CallPrepareRuntime, func(ctx context.Context) error {
			res, err := e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job})
			if o.placement = mergePlacement(o.placement, res.Placement); o.placement != nil {
				job.Remote.Member = o.placement.Member
			}
			return err
		}},
		{cases.CallRunJob, func(ctx context.Context) error {
			sink := func(ch shared.OutputChunk) error {
				running := execRunning(r, argv)
				o.mu.Lock()
				defer o.mu.Unlock()
				if !o.firstChunk {
					o.firstChunk, o.firstWhileRuns = true, running
				}
				switch ch.Stream {
				case shared.Stdout:
					o.stdout.Write(ch.Data)
				case shared.Stderr:
					o.stderr.Write(ch.Data)
				default:
					return fmt.Errorf("chunk of unknown stream %d", ch.Stream)
				}
				return nil
			}
			var err error
			o.run, err = e.RunJob(ctx, shared.RunRequest{Job: job}, sink)
			o.ran = err == nil
			return err
		}},
		{cases.CallCollectArtifacts, func(ctx context.Context) error {
			var err error
			o.collect, err = e.CollectArtifacts(ctx, shared.CollectRequest{Job: job})
			return err
		}},
	}
	reachedRuntime := false
	for _, call := range calls {
		if call.name == cases.CallPrepareRuntime {
			reachedRuntime = true
		}
		if err := t.call(ctx, c.Safety, call.name, call.f); err != nil {
			o.failedCall, o.err = call.name, err
			break
		}
		if c.Safety != nil && call.name == boundedCall(c) {
			break // a safety case ends with the call its bound is about
		}
	}
	var cleanupErr error
	r.safety.heal() // the fault lasts until the job's calls end
	r.healAfterCalls(c)
	if reachedRuntime {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shared.CleanupTimeout)
		_, cleanupErr = e.Cleanup(cctx, shared.CleanupRequest{Job: job})
		cancel()
	}

	checkWholeError(ck, c, o)
	checkStage(ck, c, r, o, snapDir, snapParentBefore)
	checkCreate(ck, c, r)
	checkExec(ck, c, r, o, argv)
	checkArtifacts(ck, c, r, o, localBefore)
	checkPlacement(ck, c, r, o.placement)

	// Cleanup: the instance is gone, and a second Cleanup succeeds.
	if reachedRuntime {
		if cleanupErr != nil {
			ck.failf("Cleanup failed: %v", cleanupErr)
		}
		if instance != "" && r.Incus.Exists(r.Project, instance) {
			ck.failf("instance %s still exists after Cleanup (after %s): the instance leaked", instance, describeEnd(o))
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shared.CleanupTimeout)
		res, err := e.Cleanup(cctx, shared.CleanupRequest{Job: job})
		cancel()
		switch {
		case err != nil:
			ck.failf("a second Cleanup failed (it must succeed when the instance is gone): %v", err)
		case res.Deleted:
			ck.failf("a second Cleanup says it deleted instance %s, which the first one had deleted", res.Instance)
		}
		checkGhost(ctx, ck, e, c, r, job, instance)
	} else if instance != "" && len(r.Incus.CreateRequests()) > 0 {
		ck.failf("an instance was created though PrepareRuntime was never called")
	}
}

// boundedCall is the call a safety case's bound_secs is about: the one
// want/error names, or RunJob.
func boundedCall(c *cases.WholeCase) string {
	if c.WantError != nil {
		return c.WantError.Call
	}
	return cases.CallRunJob
}

// refusedConfig: a safety case whose SSH config must be refused, so that
// a Configure that refuses it does what the case wants.
func refusedConfig(c *cases.WholeCase) bool {
	return c.Safety != nil && c.WantError != nil && c.WantError.Call == cases.CallPrepareDirectories &&
		(c.Safety.StrictHostKeyChecking == "no" || c.Safety.StrictHostKeyChecking == "off")
}

func describeEnd(o *outcome) string {
	if o.err == nil {
		return "a job that succeeded"
	}
	return "a job whose " + o.failedCall + " failed"
}

// execRunning reports whether the job's exec (argv) is still running in
// the fake. One in an instance that is gone runs no more, though the fake
// may not have recorded its end yet (the delete stops it, its operation
// ends a moment later).
func execRunning(r *WholeRemote, argv []string) bool {
	for _, x := range r.Incus.Execs() {
		if slices.Equal(x.Command, argv) && x.Return == -1 && r.Incus.Exists(x.Project, x.Instance) {
			return true
		}
	}
	return false
}

func remoteTree(ck *check, fsys treeFS, dir string) map[string]string {
	if dir == "" || dir == "." {
		return nil
	}
	t, err := Tree(fsys, dir, true)
	if err != nil {
		ck.failf("harness: remote tree of %s: %v", dir, err)
	}
	return t
}

func checkWholeError(ck *check, c *cases.WholeCase, o *outcome) {
	w := c.WantError
	switch {
	case w == nil && o.err != nil:
		ck.failf("%s failed: %v", o.failedCall, o.err)
	case w == nil:
	case o.err == nil:
		ck.failf("every call succeeded; want %s to fail with an error containing %q", w.Call, w.Lines)
	case o.failedCall != w.Call:
		ck.failf("%s failed (%v); want %s to fail", o.failedCall, o.err, w.Call)
	default:
		checkLines(ck, w.Call, o.err, w.Lines)
	}
}

func checkStage(ck *check, c *cases.WholeCase, r *WholeRemote, o *outcome, snapDir string, parentBefore map[string]string) {
	if snapDir == "" {
		return
	}
	parent := path.Dir(snapDir)
	after := remoteTree(ck, r.memberFS(o.stageMember), parent)
	for p := range after {
		if strings.HasPrefix(p, ".pikaci-sync-snapshot-") && !strings.Contains(p, "/") {
			ck.failf("temporary directory %s is left behind in %s after StageWorkspaceSnapshot", p, parent)
		}
	}
	if o.failedCall == cases.CallStage {
		if d := cmp.Diff(parentBefore, after); d != "" {
			ck.failf("a failed %s changed %s on the remote: a half-written snapshot must never be published (-before +after):\n%s", o.failedCall, parent, d)
		}
	}
	w := c.WantStage
	if w == nil || !o.stageRan {
		return
	}
	if w.Reused && !o.stage.Reused {
		ck.failf("StageWorkspaceSnapshot sent the snapshot again (reused false, %d bytes sent) though the remote marker in %s matches", o.stage.BytesSent, snapDir)
	}
	if !w.Reused && o.stage.Reused {
		ck.failf("StageWorkspaceSnapshot reused the snapshot in %s; want it sent", snapDir)
	}
	if o.stage.Reused && o.stage.BytesSent != 0 {
		ck.failf("StageWorkspaceSnapshot reused the snapshot but reports %d bytes sent, want 0", o.stage.BytesSent)
	}
	if !o.stage.Reused && o.stage.BytesSent <= 0 {
		ck.failf("StageWorkspaceSnapshot sent the snapshot but reports %d bytes sent", o.stage.BytesSent)
	}
	got := remoteTree(ck, r.memberFS(o.stageMember), snapDir)
	if d := cmp.Diff(w.Tree, got); d != "" {
		ck.failf("the remote snapshot dir %s differs from want/stage.json's tree (-want +got):\n%s", snapDir, d)
	}
}

func checkCreate(ck *check, c *cases.WholeCase, r *WholeRemote) {
	reqs := r.Incus.CreateRequests()
	w := c.WantCreate
	if w == nil {
		if len(reqs) > 0 {
			ck.failf("%d instance create request(s) were made; want none (first: %s)", len(reqs), reqs[0].Name)
		}
		return
	}
	if len(reqs) != 1 && c.Cluster == nil {
		ck.failf("%d instance create requests were made; want exactly one", len(reqs))
	}
	q, ok := createToCheck(c, reqs)
	if !ok {
		ck.failf("no instance create request was made; want one")
		return
	}
	cfg := maps.Clone(q.Config)
	created, ok := cfg[shared.LabelCreated]
	delete(cfg, shared.LabelCreated)
	if !ok {
		ck.failf("the create request has no %s label", shared.LabelCreated)
	} else if t, err := time.Parse(time.RFC3339, created); err != nil || !strings.HasSuffix(created, "Z") || t.Location() != time.UTC {
		ck.failf("the create request's %s is %q, not RFC 3339 in UTC", shared.LabelCreated, created)
	}
	// The run's nonce and heartbeat (docs/contract.md, "One run at a
	// time") differ each run: checked for their form, not compared.
	if beat, ok := cfg[shared.LabelHeartbeat]; ok {
		delete(cfg, shared.LabelHeartbeat)
		if t, err := time.Parse(time.RFC3339, beat); err != nil || !strings.HasSuffix(beat, "Z") || t.Location() != time.UTC {
			ck.failf("the create request's %s is %q, not RFC 3339 in UTC", shared.LabelHeartbeat, beat)
		}
	}
	if nonce, ok := cfg[shared.LabelNonce]; ok {
		delete(cfg, shared.LabelNonce)
		if nonce == "" {
			ck.failf("the create request's %s is empty", shared.LabelNonce)
		}
	}
	got := cases.WantCreate{
		Name: q.Name, Type: q.Type, Alias: q.Source.Alias, Profiles: q.Profiles, Config: cfg, Devices: q.Devices,
	}
	if q.Source.Type != "image" {
		ck.failf("the create request's source type is %q, want \"image\"", q.Source.Type)
	}
	if q.Project != r.Project {
		ck.failf("the instance was created in project %q, want %q", q.Project, r.Project)
	}
	if d := cmp.Diff(*w, got); d != "" {
		ck.failf("the create request differs from want/create.json (-want +got):\n%s", d)
	}
	if n := r.Incus.Count("PUT", func(p string) bool {
		return strings.HasPrefix(p, "/1.0/instances/"+q.Name) && !strings.HasSuffix(p, "/state")
	}); n > 0 {
		ck.failf("%d instance update(s) followed the create request; the devices must come with the create request alone", n)
	}
	n := 0
	for _, req := range r.Incus.Requests() {
		// A config-only patch (the run's heartbeat) changes no device.
		if req.Method == "PATCH" && strings.HasPrefix(req.Path, "/1.0/instances/"+q.Name) && bytes.Contains(req.Body, []byte(`"devices"`)) {
			n++
		}
	}
	if n > 0 {
		ck.failf("%d instance patch(es) followed the create request; the devices must come with the create request alone", n)
	}
}

func checkExec(ck *check, c *cases.WholeCase, r *WholeRemote, o *outcome, argv []string) {
	var runs []int
	execs := r.Incus.Execs()
	for i, x := range execs {
		if slices.Equal(x.Command, argv) {
			runs = append(runs, i)
		}
	}
	w := c.WantExec
	if w == nil {
		if len(runs) > 0 && !slices.Equal(argv, []string{"true"}) {
			ck.failf("the job's command %q ran in the guest; want it not run", argv)
		}
	} else {
		if len(runs) != 1 {
			ck.failf("the job's command %q ran %d times in the guest; want once", w.Argv, len(runs))
		} else {
			x := execs[runs[0]]
			ready := slices.ContainsFunc(execs[:runs[0]], func(e incusExec) bool {
				return slices.Equal(e.Command, []string{"true"}) && e.Return == 0
			})
			if !ready {
				ck.failf("the job ran before an exec of `true` succeeded in the instance: PrepareRuntime must poll it until it accepts an exec")
			}
			if !slices.Equal(x.Command, w.Argv) {
				ck.failf("the guest ran argv %q; want %q", x.Command, w.Argv)
			}
			if x.Dir != w.Cwd {
				ck.failf("the job ran in %q in the guest; want cwd %q", x.Dir, w.Cwd)
			}
			if int(x.User) != w.User {
				ck.failf("the job ran as uid %d; want %d", x.User, w.User)
			}
			for k, v := range w.Env {
				if got, ok := x.Env[k]; !ok || got != v {
					ck.failf("the job's environment has %s=%q (set: %t); want %q", k, got, ok, v)
				}
			}
		}
	}
	if c.WantStdout != nil && o.stdout.String() != *c.WantStdout {
		ck.failf("the job's stdout differs from want/stdout (-want +got):\n%s", cmp.Diff(*c.WantStdout, o.stdout.String()))
	}
	if c.WantStderr != nil && o.stderr.String() != *c.WantStderr {
		ck.failf("the job's stderr differs from want/stderr (-want +got):\n%s", cmp.Diff(*c.WantStderr, o.stderr.String()))
	}
	if c.Live && o.firstChunk && !o.firstWhileRuns {
		ck.failf("the job's first output chunk reached the host only after the job's process had ended: output must be streamed while the job runs, not buffered until its end")
	}
	if c.Live && !o.firstChunk && o.ran {
		ck.failf("the job printed, but no output chunk reached the host")
	}
	if wr := c.WantResult; wr != nil && o.ran {
		got := cases.WantResult{ExitCode: o.run.ExitCode, TimedOut: o.run.TimedOut}
		switch {
		case wr.TimedOut && !got.TimedOut:
			ck.failf("the job ran to its end (exit code %d) though command.timeout_secs is %d: the time limit was not applied", got.ExitCode, c.Job.Command.TimeoutSecs)
		case *wr != got:
			ck.failf("RunJob's result differs from want/result.json (-want +got):\n%s", cmp.Diff(*wr, got))
		}
		if got.TimedOut && o.run.TimeoutSecs != c.Job.Command.TimeoutSecs {
			ck.failf("a timed-out result says timeout_secs %d; want %d", o.run.TimeoutSecs, c.Job.Command.TimeoutSecs)
		}
	}
	// No process of the job keeps running once RunJob returned.
	if o.ran || o.failedCall == cases.CallRunJob {
		if execRunning(r, argv) {
			ck.failf("the job's process still runs in the guest after RunJob returned")
		}
	}
}

func checkArtifacts(ck *check, c *cases.WholeCase, r *WholeRemote, o *outcome, localBefore map[string]string) {
	jobDir := r.Job.Host.JobDir
	if !filepath.IsAbs(jobDir) {
		return
	}
	artDir := filepath.Join(jobDir, "artifacts")
	// Nothing may be written on the runner host but the artifacts (and the
	// plugin's own files in the job dir are not ours to judge).
	after, err := Tree(osTreeFS{}, r.LocalRoot, true)
	if err != nil {
		ck.failf("harness: %v", err)
		return
	}
	artRel, _ := filepath.Rel(r.LocalRoot, artDir)
	artRel = filepath.ToSlash(artRel)
	for p, v := range after {
		if p == artRel || strings.HasPrefix(p, artRel+"/") {
			continue
		}
		if localBefore[p] != v && !strings.HasPrefix(path.Base(p), "pikaci-") {
			ck.failf("the runner host's %s changed (%q) outside %s", path.Join(r.LocalRoot, p), v, artDir)
		}
	}
	w := c.WantArtifacts
	if w == nil {
		return
	}
	got, err := Tree(osTreeFS{}, artDir, true)
	if err != nil {
		ck.failf("harness: %v", err)
		return
	}
	artPath := shared.DefaultArtifactsPath
	if c.Job.Artifacts != nil && c.Job.Artifacts.Path != "" {
		artPath = c.Job.Artifacts.Path
	}
	for p, v := range got {
		if want, ok := w.Tree[p]; ok && want == v {
			continue
		}
		if e, ok := c.Guest[path.Join(artPath, p)]; ok && e.Kind == "symlink" && !strings.HasPrefix(v, "symlink") {
			ck.failf("collected artifact %s is a %s, but it is a symlink (-> %s) in the guest: a link was followed", p, strings.Fields(v)[0], e.Target)
		}
	}
	if d := cmp.Diff(w.Tree, got); d != "" {
		ck.failf("the collected artifacts differ from want/artifacts.json's tree (-want +got):\n%s", d)
	}
	if o.failedCall == cases.CallCollectArtifacts || o.err == nil {
		warnings := o.collect.Warnings
		if len(warnings) != len(w.Warnings) {
			ck.failf("CollectArtifacts gave %d warning(s) %q; want %d matching %q", len(warnings), warnings, len(w.Warnings), w.Warnings)
		}
		for _, want := range w.Warnings {
			if !slices.ContainsFunc(warnings, func(s string) bool { return strings.Contains(s, want) }) {
				ck.failf("no CollectArtifacts warning contains %q (warnings: %q)", want, warnings)
			}
		}
	}
}
