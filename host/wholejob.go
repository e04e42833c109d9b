package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/internal/regfile"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// The phases of the whole job as the run record names them: the names of
// the original remote-linux-vm executor (docs/contract.md, "Where it comes
// from"). RunJob is recorded as two phases, launch_guest (until the job's
// first output or its end) and wait_for_completion (the rest).
const (
	PhasePrepareDirectories     = "prepare_directories"
	PhaseStageWorkspaceSnapshot = "stage_workspace_snapshot"
	PhasePrepareRuntime         = "prepare_runtime"
	PhaseLaunchGuest            = "launch_guest"
	PhaseWaitForCompletion      = "wait_for_completion"
	PhaseCollectArtifacts       = "collect_artifacts"
)

// ExitCommandNotFound is the exit code of a command that was not found.
const ExitCommandNotFound = 127

// RecordFile is the run record's file name in host.job_dir.
const RecordFile = "pikaci-execution.json"

// timeFormat is RFC 3339 in UTC with milliseconds, as the record wants.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// Record is the run record of one whole job (docs/contract.md, "The run
// record"). It is complete when the job fails part-way: the phases that ran
// keep their timings, the failing phase its error.
type Record struct {
	// Job is job.id; Instance the job's instance, once PrepareRuntime
	// answered.
	Job      string        `json:"job"`
	Instance string        `json:"instance,omitempty"`
	Phases   []PhaseRecord `json:"phases"`
	// Image is the image the instance was created from: the project and
	// alias asked for, and the fingerprint once PrepareRuntime answered.
	Image    shared.Image   `json:"image"`
	Snapshot SnapshotRecord `json:"snapshot"`
	// Placement is, on a cluster, the member the job ran on, why, and the
	// members tried before it (docs/contract.md, "Clusters").
	Placement *shared.Placement `json:"placement,omitempty"`
	// ExitCode is the job's exit code; null when the job did not end with
	// one (it never ran, or an executor error or cancellation ended it).
	ExitCode *int `json:"exit_code"`
	TimedOut bool `json:"timed_out"`
	// TimeoutSecs is the time limit RunJob applied (0: none).
	TimeoutSecs int              `json:"timeout_secs,omitempty"`
	Artifacts   *ArtifactsRecord `json:"artifacts,omitempty"`
	// Cleanup is null when the job never reached PrepareRuntime (there was
	// nothing to clean up).
	Cleanup *CleanupRecord `json:"cleanup"`
	// Error is what ended the run early: an invalid input (before any
	// phase), a phase's error, a cancellation, or a cleanup failure.
	Error string `json:"error,omitempty"`
	// Failure is which kind of failure ended the run (FailureBuild,
	// FailureSystem, FailureTimeout, FailureCancelled); absent when the job
	// ran and exited 0 and every phase and the cleanup succeeded.
	Failure string `json:"failure,omitempty"`
	// Warnings are what PrepareRuntime said beside its result: a stale
	// instance of an earlier run of the job deleted (its runner died), a
	// device setting left out.
	Warnings []string `json:"warnings,omitempty"`
	// Preflight holds the checks run before the first phase, when they
	// ran (WholeJobOptions.Preflight).
	Preflight []shared.Check `json:"preflight,omitempty"`
	DryRun    bool           `json:"dry_run,omitempty"`
	// Plan is, for a dry run that went through PrepareRuntime, what the
	// run would do.
	Plan *Plan `json:"plan,omitempty"`
}

// The kinds of failure a record names (Record.Failure): what a runner
// needs to tell a broken build from a broken runner.
const (
	// FailureBuild: the job ran to its end and exited non-zero. A phase
	// after it that failed (collection) does not change that: the build
	// failed first.
	FailureBuild = "build"
	// FailureSystem: the executor or the infrastructure failed: an input
	// refused before any phase, a phase's error, a job that passed but
	// whose artifacts could not be collected (over their cap, say), or a
	// failed cleanup (whatever the job did: an instance may be left).
	FailureSystem = "system"
	// FailureTimeout: the job passed command.timeout_secs.
	FailureTimeout = "timeout"
	// FailureCancelled: the run's context ended (SIGINT, SIGTERM) before
	// the run did.
	FailureCancelled = "cancelled"
)

// classify names the failure that ended a run whose record is rec and
// whose error is err (nil: the run went through), ctx being the run's
// context.
func classify(ctx context.Context, rec Record, err error) string {
	if err != nil && ctx.Err() != nil {
		return FailureCancelled
	}
	if _, ok := errors.AsType[*CleanupError](err); ok {
		return FailureSystem
	}
	switch {
	case rec.ExitCode == nil:
		if err != nil {
			return FailureSystem
		}
		return "" // a dry run
	case rec.TimedOut:
		return FailureTimeout
	case *rec.ExitCode != 0:
		return FailureBuild
	case err != nil:
		return FailureSystem
	}
	return ""
}

// PhaseRecord is one phase's timing and outcome.
type PhaseRecord struct {
	Name       string `json:"name"`
	StartedAt  string `json:"started_at"`
	FinishedAt string `json:"finished_at"`
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error"`
}

// SnapshotRecord is what StageWorkspaceSnapshot did.
type SnapshotRecord struct {
	Reused    bool  `json:"reused"`
	BytesSent int64 `json:"bytes_sent"`
}

// ArtifactsRecord is what CollectArtifacts copied.
type ArtifactsRecord struct {
	Dir      string   `json:"dir"`
	Files    int      `json:"files"`
	Bytes    int64    `json:"bytes"`
	Warnings []string `json:"warnings,omitempty"`
	// WarningsDropped counts the warnings past the first
	// MaxRecordWarnings, which the record leaves out.
	WarningsDropped int `json:"warnings_dropped,omitempty"`
}

// MaxRecordWarnings bounds the warnings a record keeps; the rest are
// counted.
const MaxRecordWarnings = 100

// CleanupRecord is how Cleanup went.
type CleanupRecord struct {
	Deleted bool   `json:"deleted"`
	Error   string `json:"error"`
}

// PhaseError is the error of the phase that failed, named as the record
// names it.
type PhaseError struct {
	Phase string
	Err   error
}

func (e *PhaseError) Error() string { return "phase " + e.Phase + ": " + e.Err.Error() }
func (e *PhaseError) Unwrap() error { return e.Err }

// CleanupError is a failed Cleanup. It comes with, never instead of, the
// job's own error (errors.Join).
type CleanupError struct {
	Instance string
	Err      error
}

func (e *CleanupError) Error() string {
	return fmt.Sprintf("cleanup of instance %s: %v", shared.Show(e.Instance), e.Err)
}
func (e *CleanupError) Unwrap() error { return e.Err }

// WholeJobOptions say where the job's output goes and how to get an
// executor back after its plugin died.
type WholeJobOptions struct {
	// Stdout and Stderr receive the job's output as it arrives, chunk by
	// chunk, in order. Nil: discarded. A write error stops the job as a
	// cancellation would.
	Stdout, Stderr io.Writer
	// Reload returns an executor to run Cleanup with when a phase failed
	// with shared.ErrUnavailable (the plugin crashed or could not be
	// reached). It gets Cleanup's context. Nil: Cleanup runs on the same
	// executor (a *Plugin restarts its process by itself).
	Reload func(ctx context.Context) (shared.JobExecutor, error)
	// DryRun runs PrepareDirectories, StageWorkspaceSnapshot and
	// PrepareRuntime as dry runs, stops there, and writes no record.
	DryRun bool
	// Now is the clock of the record. Nil: time.Now.
	Now func() time.Time
	// OnPhase, when set, is called as each phase ends, with the phase and
	// the record so far (what the phase did is in it); for progress lines.
	OnPhase func(phase PhaseRecord, rec Record)
	// OnPhaseStart, when set, is called as PrepareDirectories,
	// StageWorkspaceSnapshot, PrepareRuntime and CollectArtifacts start
	// (the phases around the job, which print nothing of their own).
	OnPhaseStart func(name string)
	// OnPreflight, when set, is called once the preflight passed, with its
	// checks.
	OnPreflight func(checks []shared.Check)
	// Preflight runs Preflight before the first phase: the first failed
	// check stops the run, recorded as a system failure, nothing changed.
	Preflight bool
}

// RunWholeJob runs a whole job (contract version 2) through e: it checks
// every input first, then runs prepare_directories,
// stage_workspace_snapshot, prepare_runtime, launch_guest and
// wait_for_completion (RunJob) and collect_artifacts in order, stopping at
// the first executor error; artifacts are collected also when the job
// exited non-zero or timed out. Once PrepareRuntime was called, Cleanup
// always runs, whatever happened, on a context of its own bounded by
// shared.CleanupTimeout. The record is written to
// <host.job_dir>/pikaci-execution.json (also when the job failed) and
// returned.
//
// The error is nil when the job ran to its end, whatever its exit code (see
// the record's ExitCode and TimedOut), and ctx did not end meanwhile (when
// it ended during Cleanup, the error says so, with ctx's cause). Otherwise it is a *PhaseError (the
// failing phase, possibly wrapping ctx's error), an ErrInvalidInput from the
// checks, and/or a *CleanupError, joined.
func RunWholeJob(ctx context.Context, e shared.JobExecutor, job shared.WholeJob, opts WholeJobOptions) (Record, error) {
	r := &wholeRun{e: e, job: job, opts: opts, rec: Record{Job: job.Job.ID, Phases: []PhaseRecord{}, DryRun: opts.DryRun}}
	if r.opts.Now == nil {
		r.opts.Now = time.Now
	}
	err := CheckWholeJob(job)
	if p, ok := e.(*Plugin); ok && err == nil && p.Protocol() < shared.ProtocolWholeJob {
		err = &ProtocolError{Plugin: p.Name(), Protocol: p.Protocol(), Call: "the whole job"}
	}
	if p, ok := e.(*Plugin); ok && err == nil && job.Remote.IsCluster() && !slices.Contains(p.Info().Capabilities, shared.CapabilityCluster) {
		// Protobuf drops a field the plugin does not know: it would run
		// the job on remote.host as if there were no cluster.
		err = shared.Errorf(shared.ErrInvalidInput, "remote.incus.cluster", "",
			"plugin %s does not run jobs on an Incus cluster (no %q capability): remove remote.incus.cluster or use a plugin that has it",
			p.Name(), shared.CapabilityCluster)
	}
	if err != nil {
		r.rec.Error = err.Error()
		r.rec.Failure = FailureSystem
		if layout.CheckAbsClean("host.job_dir", job.Host.JobDir) == nil && !opts.DryRun {
			err = errors.Join(err, r.write())
		}
		return r.rec, err
	}
	// The image as asked for; PrepareRuntime's answer adds the fingerprint.
	r.rec.Image = shared.Image{Project: job.Remote.Incus.Project, Alias: job.Runtime.Image}
	if opts.Preflight {
		r.rec.Preflight, err = Preflight(ctx, e, job)
		if err != nil {
			r.rec.Error = err.Error()
			r.rec.Failure = classify(ctx, r.rec, err)
			if !opts.DryRun {
				err = errors.Join(err, r.write())
			}
			return r.rec, err
		}
		if opts.OnPreflight != nil {
			opts.OnPreflight(r.rec.Preflight)
		}
	}
	if !opts.DryRun {
		// First a record that says the run started, replacing an earlier
		// run's: should this run die without a word (SIGKILL), its job dir
		// does not show the earlier run's outcome as its own.
		r.rec.Error = "the run started and has not ended: if this stays, the runner stopped before the run could end"
		if err := r.write(); err != nil {
			return r.rec, err
		}
		r.rec.Error = ""
	}
	err = r.phases(ctx)
	if r.reachedRuntime && !opts.DryRun {
		err = errors.Join(err, r.cleanup(ctx, err))
	}
	if ctx.Err() != nil && err == nil {
		// Every phase was done when ctx ended: the run was stopped during
		// its cleanup, which went on all the same.
		err = fmt.Errorf("stopped during cleanup, after the job ended: %w", context.Cause(ctx))
	}
	if err != nil {
		r.rec.Error = err.Error()
	}
	r.rec.Failure = classify(ctx, r.rec, err)
	if !opts.DryRun {
		if werr := r.write(); werr != nil {
			err = errors.Join(err, werr)
			// A run whose record is lost is a failed run, whatever the job did.
			if r.rec.Failure == "" || r.rec.Failure == FailureBuild {
				r.rec.Failure = FailureSystem
			}
		}
	}
	return r.rec, err
}

// emptyArtifacts removes <jobDir>/artifacts, an earlier run's copy, before
// this run's collection, so that what is there after it is what this
// run's record counts. A link
// there is removed, never followed.
func emptyArtifacts(jobDir string) error {
	dir := shared.ArtifactsDirOf(jobDir)
	if err := os.RemoveAll(dir); err != nil {
		return shared.Errorf(kindOfFSError(err), "host.job_dir", jobDir,
			"remove the earlier run's artifacts %s: %w", shared.Show(dir), err)
	}
	return nil
}

// CheckWholeJob checks every input of every phase of a whole job before the
// first phase, with no I/O but on this machine: the version 1 inputs and
// the device rules (devices.Check), the version 2 inputs
// (shared.WholeJob.Check: ranges, argument sizes, the gRPC message size),
// that host.snapshot_dir holds a marker whose hash agrees with
// host.snapshot_content_hash, and that host.job_dir takes the run record
// (CheckJobDirWritable). It is the one function a preflight calls.
func CheckWholeJob(job shared.WholeJob) error {
	if _, err := devices.Check(job.JobSpec); err != nil {
		return err
	}
	if err := job.Check(); err != nil {
		return err
	}
	if _, err := ReadSnapshotHash(job.Host.SnapshotDir, job.Host.SnapshotContentHash); err != nil {
		return err
	}
	return CheckJobDirWritable(job.Host.JobDir)
}

// CheckJobDirWritable checks that the run record can be written in
// jobDir: it creates a file there and removes it.
func CheckJobDirWritable(jobDir string) error {
	f, err := os.CreateTemp(jobDir, "."+RecordFile+".check-*")
	if err != nil {
		return shared.Errorf(kindOfFSError(err), "host.job_dir", jobDir,
			"host.job_dir %s is not writable: the run record could not be written there: %w", shared.Show(jobDir), err)
	}
	name := f.Name()
	err = errors.Join(f.Close(), os.Remove(name))
	if err != nil {
		return shared.Errorf(shared.ErrUnavailable, "host.job_dir", jobDir, "host.job_dir %s: check file %s: %w", shared.Show(jobDir), name, err)
	}
	return nil
}

// maxSnapshotMarker bounds the snapshot marker read: it names a hash and a
// few fields.
const maxSnapshotMarker = 1 << 20

// markerHelp says what host.snapshot_dir must hold and how to make it.
func markerHelp(dir, hash string) string {
	if hash == "" {
		hash = "HASH"
	}
	return fmt.Sprintf("host.snapshot_dir must hold the job's files and %s, a JSON object whose content_hash names that content; make it with: echo '{\"content_hash\": \"%s\"}' > %s",
		shared.SnapshotMarker, hash, filepath.Join(dir, shared.SnapshotMarker))
}

// ReadSnapshotHash reads the content_hash of dir/pikaci-snapshot.json. When
// want is not empty, the hash must equal it.
func ReadSnapshotHash(dir, want string) (string, error) {
	file := filepath.Join(dir, shared.SnapshotMarker)
	// Not followed if a symlink, not blocked on if a FIFO, read bounded.
	data, err := regfile.Read(file, maxSnapshotMarker)
	if err != nil {
		kind := kindOfFSError(err)
		if errors.Is(err, regfile.ErrRefused) {
			kind = shared.ErrInvalidInput
		}
		return "", shared.Errorf(kind, "host.snapshot_dir", dir, "snapshot marker %s: %w (%s)", file, err, markerHelp(dir, want))
	}
	var marker struct {
		ContentHash *string `json:"content_hash"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&marker); err != nil {
		return "", shared.Errorf(shared.ErrInvalidInput, "host.snapshot_dir", dir, "snapshot marker %s: %w (%s)", file, err, markerHelp(dir, want))
	}
	got := ""
	if marker.ContentHash != nil {
		got = *marker.ContentHash
	}
	if want != "" && got != want {
		return "", shared.Errorf(shared.ErrInvalidInput, "host.snapshot_content_hash", want,
			"host.snapshot_content_hash %s does not match content_hash %s of %s", shared.Show(want), shared.Show(got), file)
	}
	return got, nil
}

type wholeRun struct {
	e    shared.JobExecutor
	job  shared.WholeJob
	opts WholeJobOptions
	rec  Record

	reachedRuntime bool
}

func (r *wholeRun) stamp(t time.Time) string { return t.UTC().Format(timeFormat) }

// record appends a phase that ran from start to end.
func (r *wholeRun) record(name string, start, end time.Time, err error) {
	p := PhaseRecord{
		Name:       name,
		StartedAt:  r.stamp(start),
		FinishedAt: r.stamp(end),
		DurationMS: end.Sub(start).Milliseconds(),
	}
	if err != nil {
		p.Error = err.Error()
	}
	r.rec.Phases = append(r.rec.Phases, p)
	if r.opts.OnPhase != nil {
		r.opts.OnPhase(p, r.rec)
	}
}

// phase runs f as the named phase and records it.
func (r *wholeRun) phase(ctx context.Context, name string, f func() error) error {
	if r.opts.OnPhaseStart != nil {
		r.opts.OnPhaseStart(name)
	}
	start := r.opts.Now()
	err := ctx.Err()
	if err == nil {
		err = f()
	}
	err = withCause(ctx, err)
	r.record(name, start, r.opts.Now(), err)
	if err != nil {
		return &PhaseError{Phase: name, Err: err}
	}
	return nil
}

func (r *wholeRun) phases(ctx context.Context) error {
	job, dry := r.job, r.opts.DryRun
	var plan *Plan
	if dry {
		plan = newPlan(job)
	}
	err := r.phase(ctx, PhasePrepareDirectories, func() error {
		res, err := r.e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: job.JobSpec, DryRun: dry})
		r.placed(res.Placement)
		if plan != nil {
			plan.Directories = PlanDirectories{Command: res.Command, Directories: res.Directories}
		}
		return err
	})
	job = r.job
	if err != nil {
		return err
	}
	err = r.phase(ctx, PhaseStageWorkspaceSnapshot, func() error {
		res, err := r.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job, DryRun: dry})
		r.rec.Snapshot = SnapshotRecord{Reused: res.Reused, BytesSent: res.BytesSent}
		if plan != nil {
			plan.Snapshot = PlanSnapshot{Source: job.Host.SnapshotDir, Host: job.Remote.SSHHost(), Destination: res.SnapshotDir,
				ContentHash: res.ContentHash, Reused: res.Reused}
		}
		return err
	})
	if err != nil {
		return err
	}
	err = r.phase(ctx, PhasePrepareRuntime, func() error {
		// From here on the instance may exist, whatever the call returns.
		r.reachedRuntime = true
		res, err := r.e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job, DryRun: dry})
		if errors.Is(err, shared.ErrConflict) && ctx.Err() == nil {
			// Refused because the job's instance is another run's (a live
			// run of the same job, another owner): Cleanup would delete
			// what is not ours.
			r.reachedRuntime = false
		}
		if res.Instance != "" {
			r.rec.Instance = res.Instance
		}
		if res.Image != (shared.Image{}) {
			r.rec.Image = res.Image
		}
		r.rec.Warnings = append(r.rec.Warnings, res.Warnings...)
		r.placed(res.Placement)
		if plan != nil && err == nil {
			plan.runtime(res)
		}
		return err
	})
	job = r.job
	if err != nil || dry {
		if err == nil && plan != nil {
			// The directories are made where the job was placed.
			plan.Directories.Host = job.Remote.SSHHost()
			r.rec.Plan = plan
		}
		return err
	}
	if err := r.run(ctx); err != nil {
		return err
	}
	return r.phase(ctx, PhaseCollectArtifacts, func() error {
		// An earlier run's artifacts go first: the record counts this
		// run's only. Only a run that holds the job's instance gets here,
		// never a second run refused while the first lives.
		if err := emptyArtifacts(job.Host.JobDir); err != nil {
			return err
		}
		res, err := r.e.CollectArtifacts(ctx, shared.CollectRequest{Job: job})
		// A collection that failed part-way keeps what it copied.
		if err == nil || res.Dir != "" || res.Files > 0 || len(res.Warnings) > 0 {
			a := &ArtifactsRecord{Dir: res.Dir, Files: res.Files, Bytes: res.Bytes, Warnings: res.Warnings}
			if n := len(a.Warnings); n > MaxRecordWarnings {
				a.Warnings, a.WarningsDropped = a.Warnings[:MaxRecordWarnings:MaxRecordWarnings], n-MaxRecordWarnings
			}
			r.rec.Artifacts = a
		}
		return err
	})
}

// placed records a placement and sends its member with the later phases;
// a re-placement adds its tries to those already recorded.
func (r *wholeRun) placed(p *shared.Placement) {
	if p == nil || p.Member == "" {
		return
	}
	r.job.Remote.Member = p.Member
	if r.rec.Placement == nil {
		c := *p
		r.rec.Placement = &c
		return
	}
	if len(p.Tried) > 0 || p.Member != r.rec.Placement.Member {
		r.rec.Placement.Member, r.rec.Placement.Reason = p.Member, p.Reason
		r.rec.Placement.Tried = append(r.rec.Placement.Tried, p.Tried...)
	}
}

// withCause adds why ctx ended (a signal, a deadline) to a phase's error
// when ctx ended, so the record says what stopped the run rather than
// only "context canceled".
func withCause(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	if errors.Is(err, cause) || strings.Contains(err.Error(), cause.Error()) {
		return err
	}
	return fmt.Errorf("%w (%w)", err, cause)
}

// run is RunJob, recorded as launch_guest until the first output (or the
// end, for a job that printed nothing) and wait_for_completion after it.
func (r *wholeRun) run(ctx context.Context) error {
	start := r.opts.Now()
	var launched time.Time
	printed := false
	sink := func(c shared.OutputChunk) error {
		if launched.IsZero() {
			launched = r.opts.Now()
		}
		printed = printed || len(c.Data) > 0
		w := r.opts.Stdout
		if c.Stream == shared.Stderr {
			w = r.opts.Stderr
		}
		if w == nil {
			return nil
		}
		_, err := w.Write(c.Data)
		return err
	}
	err := ctx.Err()
	var res shared.RunResult
	if err == nil {
		res, err = r.e.RunJob(ctx, shared.RunRequest{Job: r.job}, sink)
	}
	err = withCause(ctx, err)
	end := r.opts.Now()
	if launched.IsZero() {
		if err != nil {
			r.record(PhaseLaunchGuest, start, end, err)
			return &PhaseError{Phase: PhaseLaunchGuest, Err: err}
		}
		launched = end
	}
	r.record(PhaseLaunchGuest, start, launched, nil)
	r.record(PhaseWaitForCompletion, launched, end, err)
	if err != nil {
		return &PhaseError{Phase: PhaseWaitForCompletion, Err: err}
	}
	if res.ExitCode < 0 && !res.TimedOut {
		// No process ended with it: the guest never ran the command.
		err := fmt.Errorf("the job ended with no exit code (the executor reported %d): the guest could not run command.argv[0] %s (missing, not executable, or its arguments and environment too long)",
			res.ExitCode, shared.Show(r.job.Command.Argv[0]))
		r.rec.Phases[len(r.rec.Phases)-1].Error = err.Error()
		return &PhaseError{Phase: PhaseWaitForCompletion, Err: err}
	}
	code := res.ExitCode
	r.rec.ExitCode, r.rec.TimedOut, r.rec.TimeoutSecs = &code, res.TimedOut, res.TimeoutSecs
	if code == ExitCommandNotFound && !printed && !res.TimedOut {
		// Exit 127 and nothing printed: what a missing command looks like
		// (the shell's and the Incus exec's code for it), and otherwise
		// nothing at all on the operator's screen.
		r.rec.Error = fmt.Sprintf("the job exited %d and printed nothing: command %s was probably not found in the instance (is it installed in image %s, and on PATH?)",
			code, shared.Show(r.job.Command.Argv[0]), shared.Show(r.job.Runtime.Image))
	}
	return nil
}

// cleanup runs Cleanup on a fresh context bounded by
// shared.CleanupTimeout, on an executor reloaded first when the phase that
// failed lost its plugin.
func (r *wholeRun) cleanup(ctx context.Context, phaseErr error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shared.CleanupTimeout)
	defer cancel()
	rec := &CleanupRecord{}
	r.rec.Cleanup = rec
	e := r.e
	var err error
	if errors.Is(phaseErr, shared.ErrUnavailable) && r.opts.Reload != nil {
		e, err = r.opts.Reload(ctx)
		if err != nil {
			err = fmt.Errorf("reload the executor: %w", err)
		}
	}
	if err == nil {
		var res shared.CleanupResult
		res, err = e.Cleanup(ctx, shared.CleanupRequest{Job: r.job})
		rec.Deleted = res.Deleted
		if r.rec.Instance == "" {
			r.rec.Instance = res.Instance
		}
	}
	if err != nil {
		rec.Error = err.Error()
		return &CleanupError{Instance: r.instanceName(), Err: err}
	}
	return nil
}

func (r *wholeRun) instanceName() string {
	if r.rec.Instance != "" {
		return r.rec.Instance
	}
	if l, err := layout.Derive(r.job.JobSpec); err == nil {
		return l.Instance
	}
	return ""
}

// write puts the record in the job dir: a temporary file renamed into
// place, so a reader never sees half a record.
func (r *wholeRun) write() error {
	data, err := json.MarshalIndent(r.rec, "", "  ")
	if err != nil {
		return fmt.Errorf("run record: %w", err)
	}
	data = append(data, '\n')
	path := filepath.Join(r.job.Host.JobDir, RecordFile)
	tmp, err := os.CreateTemp(r.job.Host.JobDir, "."+RecordFile+".*")
	if err != nil {
		return shared.Errorf(kindOfFSError(err), "host.job_dir", r.job.Host.JobDir, "write run record %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return shared.Errorf(shared.ErrUnavailable, "host.job_dir", r.job.Host.JobDir, "write run record %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write run record %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write run record %s: %w", path, err)
	}
	return nil
}
