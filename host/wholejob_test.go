package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

// fakeJob is an in-process shared.JobExecutor: it records the calls it
// gets, in order, fails the methods named in fail, and runs the job with
// runJob (default: exit 0 with no output).
type fakeJob struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
	// runJob, when set, is RunJob.
	runJob func(ctx context.Context, out shared.OutputSink) (shared.RunResult, error)
	// cleanupCtx is what Cleanup saw: whether its context was live and
	// had a deadline, and how far away.
	cleanupLive     bool
	cleanupDeadline time.Duration
	dryRuns         []bool
	// warnings are CollectArtifacts' warnings.
	warnings []string
	// runtimeWarnings are PrepareRuntime's warnings.
	runtimeWarnings []string
	// partial is what a failing CollectArtifacts says it copied.
	partial shared.CollectResult
}

var _ shared.JobExecutor = (*fakeJob)(nil)

func (f *fakeJob) called(method string, dry bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, method)
	f.dryRuns = append(f.dryRuns, dry)
	return f.fail[method]
}

func (f *fakeJob) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeJob) Describe(context.Context) (shared.Info, error) {
	return shared.Info{Name: "fake", Protocol: 2}, nil
}
func (f *fakeJob) Configure(context.Context, shared.Settings) error { return nil }

func (f *fakeJob) PrepareDirectories(_ context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	return shared.PrepareResult{DryRun: req.DryRun}, f.called("PrepareDirectories", req.DryRun)
}

func (f *fakeJob) ConfigureDevices(_ context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	return shared.DevicesResult{}, f.called("ConfigureDevices", req.DryRun)
}

func (f *fakeJob) StageWorkspaceSnapshot(_ context.Context, req shared.StageRequest) (shared.StageResult, error) {
	if err := f.called("StageWorkspaceSnapshot", req.DryRun); err != nil {
		return shared.StageResult{}, err
	}
	return shared.StageResult{BytesSent: 10240, DryRun: req.DryRun}, nil
}

func (f *fakeJob) PrepareRuntime(_ context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	if err := f.called("PrepareRuntime", req.DryRun); err != nil {
		return shared.RuntimeResult{}, err
	}
	return shared.RuntimeResult{
		Instance: "pikaci-0123456789ab",
		Image:    shared.Image{Project: "default", Alias: "bb", Fingerprint: "18a24b8c"},
		Warnings: f.runtimeWarnings,
		DryRun:   req.DryRun,
	}, nil
}

func (f *fakeJob) RunJob(ctx context.Context, _ shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	if err := f.called("RunJob", false); err != nil {
		return shared.RunResult{}, err
	}
	if f.runJob != nil {
		return f.runJob(ctx, out)
	}
	return shared.RunResult{}, nil
}

func (f *fakeJob) CollectArtifacts(_ context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	if err := f.called("CollectArtifacts", false); err != nil {
		return f.partial, err
	}
	return shared.CollectResult{Dir: filepath.Join(req.Job.Host.JobDir, "artifacts"), Files: 2, Bytes: 12, Warnings: f.warnings}, nil
}

func (f *fakeJob) Cleanup(ctx context.Context, _ shared.CleanupRequest) (shared.CleanupResult, error) {
	f.mu.Lock()
	f.cleanupLive = ctx.Err() == nil
	if d, ok := ctx.Deadline(); ok {
		f.cleanupDeadline = time.Until(d)
	}
	f.mu.Unlock()
	if err := f.called("Cleanup", false); err != nil {
		return shared.CleanupResult{}, err
	}
	return shared.CleanupResult{Instance: "pikaci-0123456789ab", Deleted: true}, nil
}

func (f *fakeJob) Sweep(context.Context, shared.SweepRequest) (shared.SweepResult, error) {
	return shared.SweepResult{}, f.called("Sweep", false)
}

// testWholeJob returns a valid whole job in a new job dir with a snapshot
// whose marker has the hash abc123.
func testWholeJob(tb testing.TB) shared.WholeJob {
	tb.Helper()
	root := tb.TempDir()
	jobDir := filepath.Join(root, "run-1", "jobs", "job-1")
	snap := filepath.Join(root, "snapshot")
	for _, d := range []string{jobDir, snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(snap, shared.SnapshotMarker), []byte(`{"content_hash":"abc123","files":3}`), 0o644); err != nil {
		tb.Fatal(err)
	}
	return shared.WholeJob{
		JobSpec: shared.JobSpec{
			Job:    shared.Job{ID: "job-1", Staged: true},
			Host:   shared.HostPaths{JobDir: jobDir, SnapshotContentHash: "abc123", SnapshotDir: snap},
			Remote: shared.Remote{Host: "pika-build", WorkDir: "/var/tmp/pikaci", Incus: shared.Incus{Project: "default"}},
		},
		Runtime: &shared.Runtime{Image: "bb", InstanceType: "container"},
		Command: &shared.Command{Argv: []string{"true"}, TimeoutSecs: 60},
	}
}

// fixedClock ticks 5 ms a reading, from a fixed instant.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 11, 28, 10, 0, 0, 123e6, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(5 * time.Millisecond)
		return t
	}
}

// phaseNames returns the names of the recorded phases and their errors
// ("" for none), as "name" or "name: error".
func phaseNames(rec Record) []string {
	var out []string
	for _, p := range rec.Phases {
		s := p.Name
		if p.Error != "" {
			s += ": " + p.Error
		}
		out = append(out, s)
	}
	return out
}

// readRecord reads the record file of a job.
func readRecord(tb testing.TB, job shared.WholeJob) Record {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(job.Host.JobDir, RecordFile))
	if err != nil {
		tb.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		tb.Fatal(err)
	}
	return rec
}

func TestRunWholeJobPhasesInOrder(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{runJob: func(_ context.Context, out shared.OutputSink) (shared.RunResult, error) {
		for _, c := range []shared.OutputChunk{
			{Stream: shared.Stdout, Data: []byte("building\n")},
			{Stream: shared.Stderr, Data: []byte("warning: x\n")},
			{Stream: shared.Stdout, Data: []byte("done\n")},
		} {
			if err := out(c); err != nil {
				return shared.RunResult{}, err
			}
		}
		return shared.RunResult{ExitCode: 0}, nil
	}}
	var stdout, stderr bytes.Buffer
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{Stdout: &stdout, Stderr: &stderr, Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	wantCalls := []string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime", "RunJob", "CollectArtifacts", "Cleanup"}
	if diff := cmp.Diff(wantCalls, f.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if stdout.String() != "building\ndone\n" || stderr.String() != "warning: x\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	zero := 0
	phase := func(name, start, end string, ms int64) PhaseRecord {
		return PhaseRecord{Name: name, StartedAt: "2026-11-28T10:00:00." + start + "Z", FinishedAt: "2026-11-28T10:00:00." + end + "Z", DurationMS: ms}
	}
	want := Record{
		Job:      "job-1",
		Instance: "pikaci-0123456789ab",
		Phases: []PhaseRecord{
			phase(PhasePrepareDirectories, "128", "133", 5),
			phase(PhaseStageWorkspaceSnapshot, "138", "143", 5),
			phase(PhasePrepareRuntime, "148", "153", 5),
			// RunJob: the clock is read at its start, at the first chunk
			// and at its end.
			phase(PhaseLaunchGuest, "158", "163", 5),
			phase(PhaseWaitForCompletion, "163", "168", 5),
			phase(PhaseCollectArtifacts, "173", "178", 5),
		},
		Image:     shared.Image{Project: "default", Alias: "bb", Fingerprint: "18a24b8c"},
		Snapshot:  SnapshotRecord{BytesSent: 10240},
		ExitCode:  &zero,
		Artifacts: &ArtifactsRecord{Dir: filepath.Join(job.Host.JobDir, "artifacts"), Files: 2, Bytes: 12},
		Cleanup:   &CleanupRecord{Deleted: true},
	}
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, readRecord(t, job)); diff != "" {
		t.Errorf("record file (-want +got):\n%s", diff)
	}
	if !f.cleanupLive || f.cleanupDeadline <= 0 || f.cleanupDeadline > shared.CleanupTimeout {
		t.Errorf("Cleanup's context: live %v, deadline in %v; want live with at most %v", f.cleanupLive, f.cleanupDeadline, shared.CleanupTimeout)
	}
}

// The record's JSON has the contract's field names.
func TestRecordJSONShape(t *testing.T) {
	job := testWholeJob(t)
	if _, err := RunWholeJob(t.Context(), &fakeJob{}, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(job.Host.JobDir, RecordFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"phases", "image", "snapshot", "exit_code", "timed_out", "cleanup"} {
		if _, ok := m[k]; !ok {
			t.Errorf("record has no %q: %s", k, data)
		}
	}
	p := m["phases"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "started_at", "finished_at", "duration_ms", "error"} {
		if _, ok := p[k]; !ok {
			t.Errorf("phase has no %q: %v", k, p)
		}
	}
	for obj, keys := range map[string][]string{
		"image":    {"project", "alias", "fingerprint"},
		"snapshot": {"reused", "bytes_sent"},
		"cleanup":  {"deleted", "error"},
	} {
		for _, k := range keys {
			if _, ok := m[obj].(map[string]any)[k]; !ok {
				t.Errorf("%s has no %q: %v", obj, k, m[obj])
			}
		}
	}
	if ts := p["started_at"].(string); !strings.HasSuffix(ts, "Z") || len(ts) != len("2026-11-28T10:00:00.123Z") {
		t.Errorf("started_at %q is not RFC 3339 UTC with milliseconds", ts)
	}
}

func TestRunWholeJobNonZeroExitStillCollects(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{runJob: func(context.Context, shared.OutputSink) (shared.RunResult, error) {
		return shared.RunResult{ExitCode: 3}, nil
	}}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
	if err != nil {
		t.Fatalf("a job that exits 3 is a result, not an error: %v", err)
	}
	if rec.ExitCode == nil || *rec.ExitCode != 3 || rec.Artifacts == nil || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("record %+v: want exit 3, artifacts collected, cleaned up", rec)
	}
}

func TestRunWholeJobTimeout(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{runJob: func(context.Context, shared.OutputSink) (shared.RunResult, error) {
		return shared.RunResult{ExitCode: 143, TimedOut: true, TimeoutSecs: 60}, nil
	}}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.TimedOut || rec.TimeoutSecs != 60 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("record %+v: want timed out after 60 s and cleaned up", rec)
	}
	if got := f.Calls(); got[len(got)-2] != "CollectArtifacts" || got[len(got)-1] != "Cleanup" {
		t.Errorf("calls %v: want artifacts collected, then cleanup", got)
	}
}

// A failing phase stops the job; Cleanup runs exactly when PrepareRuntime
// was called; the record keeps every phase that ran and the error of the
// one that failed.
func TestRunWholeJobFailureAtEachPhase(t *testing.T) {
	boom := shared.Errorf(shared.ErrNotFound, "x", "y", "boom")
	tests := []struct {
		method     string
		wantCalls  []string
		wantPhases []string
	}{
		{
			method:     "PrepareDirectories",
			wantCalls:  []string{"PrepareDirectories"},
			wantPhases: []string{"prepare_directories: boom"},
		},
		{
			method:     "StageWorkspaceSnapshot",
			wantCalls:  []string{"PrepareDirectories", "StageWorkspaceSnapshot"},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot: boom"},
		},
		{
			method:     "PrepareRuntime",
			wantCalls:  []string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime", "Cleanup"},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime: boom"},
		},
		{
			method:     "RunJob",
			wantCalls:  []string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime", "RunJob", "Cleanup"},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime", "launch_guest: boom"},
		},
		{
			method:     "CollectArtifacts",
			wantCalls:  []string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime", "RunJob", "CollectArtifacts", "Cleanup"},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime", "launch_guest", "wait_for_completion", "collect_artifacts: boom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			job := testWholeJob(t)
			f := &fakeJob{fail: map[string]error{tt.method: boom}}
			rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
			if !errors.Is(err, shared.ErrNotFound) {
				t.Fatalf("error %v, want the phase's", err)
			}
			pe, ok := errors.AsType[*PhaseError](err)
			if !ok || pe.Phase != strings.Split(tt.wantPhases[len(tt.wantPhases)-1], ":")[0] {
				t.Errorf("error %v does not name the failing phase", err)
			}
			if diff := cmp.Diff(tt.wantCalls, f.Calls()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPhases, phaseNames(rec)); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(rec, readRecord(t, job)); diff != "" {
				t.Errorf("record file differs from the record (-returned +file):\n%s", diff)
			}
			wantCleanup := tt.wantCalls[len(tt.wantCalls)-1] == "Cleanup"
			if (rec.Cleanup != nil) != wantCleanup || (wantCleanup && !rec.Cleanup.Deleted) {
				t.Errorf("cleanup record %+v, want cleaned up: %v", rec.Cleanup, wantCleanup)
			}
			if rec.ExitCode != nil && tt.method != "CollectArtifacts" {
				t.Errorf("exit code %d recorded for a job that did not end", *rec.ExitCode)
			}
			if rec.Error == "" {
				t.Error("record has no error")
			}
			if rec.Image.Project != "default" || rec.Image.Alias != "bb" {
				t.Errorf("record image %+v, want the project and alias asked for", rec.Image)
			}
		})
	}
}

// Cancelling the run mid-job (SIGINT/SIGTERM in runner-host) still cleans
// up, on a context of its own.
func TestRunWholeJobCancelCleansUp(t *testing.T) {
	job := testWholeJob(t)
	ctx, cancel := context.WithCancel(t.Context())
	f := &fakeJob{runJob: func(ctx context.Context, out shared.OutputSink) (shared.RunResult, error) {
		if err := out(shared.OutputChunk{Stream: shared.Stdout, Data: []byte("started\n")}); err != nil {
			return shared.RunResult{}, err
		}
		cancel()
		<-ctx.Done()
		return shared.RunResult{}, ctx.Err()
	}}
	rec, err := RunWholeJob(ctx, f, job, WholeJobOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if diff := cmp.Diff([]string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime", "RunJob", "Cleanup"}, f.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if !f.cleanupLive {
		t.Error("Cleanup ran on the cancelled context")
	}
	if diff := cmp.Diff([]string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime", "launch_guest", "wait_for_completion: context canceled"}, phaseNames(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
}

// A crash of the plugin mid-job (ErrUnavailable) has the executor reloaded
// for Cleanup.
func TestRunWholeJobCrashReloadsForCleanup(t *testing.T) {
	job := testWholeJob(t)
	crashed := &fakeJob{fail: map[string]error{
		"RunJob": shared.Errorf(shared.ErrUnavailable, "plugin", "p", "plugin p exited: %w", shared.ErrPluginExited),
	}}
	fresh := &fakeJob{}
	reloads := 0
	rec, err := RunWholeJob(t.Context(), crashed, job, WholeJobOptions{Reload: func(ctx context.Context) (shared.JobExecutor, error) {
		reloads++
		if ctx.Err() != nil {
			t.Error("Reload got a dead context")
		}
		return fresh, nil
	}})
	if !errors.Is(err, shared.ErrPluginExited) {
		t.Fatalf("error %v, want the crash", err)
	}
	if reloads != 1 {
		t.Errorf("%d reloads, want 1", reloads)
	}
	if got := crashed.Calls(); got[len(got)-1] != "RunJob" {
		t.Errorf("the crashed executor got %v after RunJob", got)
	}
	if diff := cmp.Diff([]string{"Cleanup"}, fresh.Calls()); diff != "" {
		t.Errorf("reloaded executor's calls (-want +got):\n%s", diff)
	}
	if rec.Cleanup == nil || !rec.Cleanup.Deleted || rec.Cleanup.Error != "" {
		t.Errorf("cleanup record %+v, want deleted", rec.Cleanup)
	}
}

// A failed Cleanup is reported with the job's own error, not instead.
func TestRunWholeJobCleanupErrorJoined(t *testing.T) {
	job := testWholeJob(t)
	runErr := shared.Errorf(shared.ErrConflict, "", "", "job broke")
	f := &fakeJob{fail: map[string]error{
		"RunJob":  runErr,
		"Cleanup": shared.Errorf(shared.ErrPermission, "", "", "forbidden"),
	}}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
	if !errors.Is(err, shared.ErrConflict) || !errors.Is(err, shared.ErrPermission) {
		t.Fatalf("error %v, want the job's and the cleanup's", err)
	}
	if _, ok := errors.AsType[*CleanupError](err); !ok {
		t.Errorf("error %v has no *CleanupError", err)
	}
	if rec.Cleanup == nil || rec.Cleanup.Error != "forbidden" || rec.Cleanup.Deleted {
		t.Errorf("cleanup record %+v", rec.Cleanup)
	}
}

// Every input is checked before the first phase: nothing is called.
func TestRunWholeJobChecksFirst(t *testing.T) {
	tests := []struct {
		name string
		edit func(*shared.WholeJob)
		want string
	}{
		{"bad cwd", func(j *shared.WholeJob) { j.Command.Cwd = "rel" }, `command.cwd "rel"`},
		{"bad job id", func(j *shared.WholeJob) { j.Job.ID = "a/b" }, `"a/b"`},
		{"writable workspace", func(j *shared.WholeJob) { j.Job.WritableWorkspace = true }, "writable workspace"},
		{"hash mismatch", func(j *shared.WholeJob) { j.Host.SnapshotContentHash = "def456" }, `"def456" does not match content_hash "abc123"`},
		{"no marker", func(j *shared.WholeJob) { j.Host.SnapshotDir = filepath.Dir(j.Host.SnapshotDir) }, shared.SnapshotMarker},
		{"bad memory", func(j *shared.WholeJob) { j.Runtime.Limits.Memory = "lots" }, `"lots"`},
		{"memory out of range", func(j *shared.WholeJob) { j.Runtime.Limits.Memory = "99999999999EiB" }, `runtime.limits.memory "99999999999EiB" is out of range`},
		{"env over the message limit", func(j *shared.WholeJob) { j.Command.Env = map[string]string{"BIG": strings.Repeat("v", 5<<20)} }, "command.env.BIG"},
		// A dir no one can create files in, root included (a read-only
		// file system would do as well), reached by a job dir of the
		// right shape.
		{"job dir not writable", func(j *shared.WholeJob) {
			ro := filepath.Join(filepath.Dir(j.Host.JobDir), "job-ro")
			if err := os.Symlink(fmt.Sprintf("/proc/%d/task/%d", os.Getpid(), os.Getpid()), ro); err != nil {
				t.Fatal(err)
			}
			j.Host.JobDir = ro
		}, "is not writable"},
		{"job dir not under jobs", func(j *shared.WholeJob) {
			j.Host.JobDir = filepath.Dir(filepath.Dir(j.Host.JobDir))
		}, "is not shaped <root>/<run id>/jobs/<job>"},
		{"job dir missing", func(j *shared.WholeJob) { j.Host.JobDir += "-gone" }, "is not writable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := testWholeJob(t)
			tt.edit(&job)
			f := &fakeJob{}
			rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %s", err, tt.want)
			}
			if len(f.Calls()) != 0 {
				t.Errorf("calls %v before the inputs were checked", f.Calls())
			}
			if len(rec.Phases) != 0 || rec.Error == "" {
				t.Errorf("record %+v, want no phase and the error", rec)
			}
		})
	}
}

func TestRunWholeJobDryRun(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"PrepareDirectories", "StageWorkspaceSnapshot", "PrepareRuntime"}, f.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]bool{true, true, true}, f.dryRuns); diff != "" {
		t.Errorf("dry-run flags (-want +got):\n%s", diff)
	}
	if !rec.DryRun || rec.Cleanup != nil {
		t.Errorf("record %+v, want a dry run without cleanup", rec)
	}
	if _, err := os.Stat(filepath.Join(job.Host.JobDir, RecordFile)); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote the record (stat: %v)", err)
	}
}

// A version 1 plugin loads, and the whole job and every version 2 call on
// it are refused naming the plugin and its protocol; nothing is called.
func TestV1PluginRefusesWholeJob(t *testing.T) {
	p := open(t, "oldie", Options{})
	if p.Protocol() != 1 {
		t.Fatalf("protocol %d, want 1", p.Protocol())
	}
	job := testWholeJob(t)
	_, err := RunWholeJob(t.Context(), p, job, WholeJobOptions{})
	for _, s := range []string{"plugin oldie", "protocol 1"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("RunWholeJob error %v does not say %q", err, s)
		}
	}
	_, err = p.RunJob(t.Context(), shared.RunRequest{Job: job}, nil)
	pe, ok := errors.AsType[*ProtocolError](err)
	if !ok || pe.Plugin != "oldie" || pe.Protocol != 1 || pe.Call != "RunJob" || !errors.Is(err, shared.ErrInvalidInput) {
		t.Errorf("RunJob error %#v, want a *ProtocolError for oldie, protocol 1, RunJob", err)
	}
	if !strings.Contains(err.Error(), "plugin oldie speaks protocol 1") {
		t.Errorf("RunJob error %q", err)
	}
}

// A plugin process that speaks version 2 runs the whole job through
// go-plugin, its output streamed; when it dies mid-RunJob, the host
// restarts it and cleans up.
func TestWholeJobThroughPluginProcess(t *testing.T) {
	p := open(t, "whole", Options{})
	if p.Protocol() != shared.ProtocolWholeJob {
		t.Fatalf("protocol %d, want %d", p.Protocol(), shared.ProtocolWholeJob)
	}
	t.Run("exit 3", func(t *testing.T) {
		job := testWholeJob(t)
		job.Command.Argv = []string{"exit", "3"}
		var stdout, stderr bytes.Buffer
		rec, err := RunWholeJob(t.Context(), p, job, WholeJobOptions{Stdout: &stdout, Stderr: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		if rec.ExitCode == nil || *rec.ExitCode != 3 || stdout.String() != "to stdout\n" || stderr.String() != "to stderr\n" {
			t.Errorf("exit %v, stdout %q, stderr %q", rec.ExitCode, stdout.String(), stderr.String())
		}
		if rec.Image.Fingerprint != "f00d" || rec.Snapshot.BytesSent != 1234 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("plugin killed mid-RunJob", func(t *testing.T) {
		job := testWholeJob(t)
		job.Command.Argv = []string{"block"}
		pid := p.Pid()
		kill := &killOnWrite{pid: pid}
		rec, err := RunWholeJob(t.Context(), p, job, WholeJobOptions{Stdout: kill})
		if !errors.Is(err, shared.ErrPluginExited) {
			t.Fatalf("error %v, want the plugin's death", err)
		}
		if !kill.killed {
			t.Fatal("the job's output never arrived")
		}
		if rec.Cleanup == nil || !rec.Cleanup.Deleted {
			t.Errorf("cleanup record %+v, want the instance deleted by the restarted plugin", rec.Cleanup)
		}
		if _, err := os.Stat(filepath.Join(job.Host.JobDir, "testplugin-instance")); !os.IsNotExist(err) {
			t.Errorf("instance left behind (stat: %v)", err)
		}
		if p.Pid() == pid || p.Pid() == 0 {
			t.Errorf("pid %d after the death of %d: want a new process", p.Pid(), pid)
		}
	})
}

// killOnWrite SIGKILLs a process at the first write: the job's first
// output proves the plugin is inside RunJob.
type killOnWrite struct {
	pid    int
	killed bool
}

func (k *killOnWrite) Write(p []byte) (int, error) {
	if !k.killed {
		k.killed = true
		if err := syscall.Kill(k.pid, syscall.SIGKILL); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// TestReadSnapshotHashRefusesSpecialMarkers: a marker that is a symlink (to
// a file or to /dev/zero) or a FIFO is refused naming it, without following
// it or blocking on it.
func TestReadSnapshotHashRefusesSpecialMarkers(t *testing.T) {
	for name, make := range map[string]func(p string) error{
		"symlink": func(p string) error {
			real := filepath.Join(filepath.Dir(p), "real.json")
			if err := os.WriteFile(real, []byte(`{"content_hash":"abc"}`), 0o600); err != nil {
				return err
			}
			return os.Symlink(real, p)
		},
		"dev zero": func(p string) error { return os.Symlink("/dev/zero", p) },
		"fifo":     func(p string) error { return syscall.Mkfifo(p, 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, shared.SnapshotMarker)
			if err := make(p); err != nil {
				t.Fatal(err)
			}
			_, err := ReadSnapshotHash(dir, "")
			if err == nil || !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), p) {
				t.Errorf("marker %s: %v, want invalid input naming it", name, err)
			}
		})
	}
}

// The record says the run started before the first phase, replacing an
// earlier run's: a run that dies half way (runner-host SIGKILLed) does not
// leave the earlier run's record looking like its own.
func TestRunWholeJobWritesAStartedRecordFirst(t *testing.T) {
	job := testWholeJob(t)
	old := `{"job":"job-1","phases":[],"exit_code":0}`
	if err := os.WriteFile(filepath.Join(job.Host.JobDir, RecordFile), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	var during Record
	f := &fakeJob{runJob: func(context.Context, shared.OutputSink) (shared.RunResult, error) {
		during = readRecord(t, job)
		return shared.RunResult{}, nil
	}}
	if _, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	if during.ExitCode != nil || !strings.Contains(during.Error, "started") {
		t.Errorf("record while the job ran: exit code %v, error %q; want none and one saying the run started and has not ended", during.ExitCode, during.Error)
	}
	if after := readRecord(t, job); after.Error != "" || after.ExitCode == nil {
		t.Errorf("record after the run: %+v, want the final one", after)
	}
}

// A job that ends without an exit code (the executor says -1: the guest
// could not exec it) is a failure with a message, not exit code -1, which
// runner-host turned into a silent 255.
func TestRunWholeJobNegativeExitCodeIsAFailure(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{runJob: func(context.Context, shared.OutputSink) (shared.RunResult, error) {
		return shared.RunResult{ExitCode: -1}, nil
	}}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
	if err == nil || !strings.Contains(err.Error(), "no exit code") {
		t.Fatalf("error %v, want one saying the job has no exit code", err)
	}
	if rec.ExitCode != nil {
		t.Errorf("record exit code %d, want none", *rec.ExitCode)
	}
}

// The record keeps the first MaxRecordWarnings warnings and counts the
// rest: 1,100 skipped links made a 4.6 MB record.
func TestRecordCapsAndCountsWarnings(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{}
	for i := range 1100 {
		f.warnings = append(f.warnings, fmt.Sprintf("skipped link %d", i))
	}
	if _, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	rec := readRecord(t, job)
	if rec.Artifacts == nil || len(rec.Artifacts.Warnings) != MaxRecordWarnings || rec.Artifacts.WarningsDropped != 1100-MaxRecordWarnings {
		t.Fatalf("artifacts %+v: want %d warnings kept and %d counted", rec.Artifacts, MaxRecordWarnings, 1100-MaxRecordWarnings)
	}
	if rec.Artifacts.Warnings[0] != "skipped link 0" {
		t.Errorf("first warning %q, want the first given", rec.Artifacts.Warnings[0])
	}
}

// PrepareRuntime refused with ErrConflict (the job's instance is a live
// run's, or another owner's) gets no Cleanup: it would delete what is not
// this run's.
func TestRunWholeJobConflictAtRuntimeSkipsCleanup(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{fail: map[string]error{"PrepareRuntime": shared.Errorf(shared.ErrConflict, "instance", "pikaci-0123456789ab", "already has a live run")}}
	rec, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{})
	if !errors.Is(err, shared.ErrConflict) {
		t.Fatalf("error %v, want the conflict", err)
	}
	if slices.Contains(f.Calls(), "Cleanup") || rec.Cleanup != nil {
		t.Errorf("calls %v, cleanup record %+v: want no Cleanup", f.Calls(), rec.Cleanup)
	}
}

// A collection that fails part-way keeps in the record the counts and
// warnings of what it copied, beside the phase's error.
func TestRunWholeJobCollectionFailedPartWayKeepsItsCounts(t *testing.T) {
	job := testWholeJob(t)
	f := &fakeJob{fail: map[string]error{"CollectArtifacts": shared.Errorf(shared.ErrInvalidInput, "artifacts.max_bytes", "10", "artifacts.max_bytes 10 passed")}}
	f.partial = shared.CollectResult{Dir: filepath.Join(job.Host.JobDir, "artifacts"), Files: 1, Bytes: 5, Warnings: []string{"skipped fifo p"}}
	if _, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{}); err == nil {
		t.Fatal("no error; want the collection's")
	}
	rec := readRecord(t, job)
	want := &ArtifactsRecord{Dir: f.partial.Dir, Files: 1, Bytes: 5, Warnings: []string{"skipped fifo p"}}
	if diff := cmp.Diff(want, rec.Artifacts); diff != "" {
		t.Errorf("record's artifacts (-want +got):\n%s", diff)
	}
	if rec.Failure != FailureSystem || !strings.Contains(rec.Error, "artifacts.max_bytes 10") {
		t.Errorf("record failure %q error %q: want a system failure naming the cap", rec.Failure, rec.Error)
	}
}

// An earlier run's files in <job_dir>/artifacts do not survive into this
// run, whose record counts only what it collected; a link there is removed,
// not followed.
func TestRunWholeJobEmptiesAnEarlierRunsArtifacts(t *testing.T) {
	job := testWholeJob(t)
	old := filepath.Join(shared.ArtifactsDirOf(job.Host.JobDir), "sub", "old.txt")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("earlier run"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RunWholeJob(t.Context(), &fakeJob{}, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(shared.ArtifactsDirOf(job.Host.JobDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("artifacts dir after a run that collected nothing: %v; want it gone with the earlier run's files", err)
	}

	outside := t.TempDir()
	keep := filepath.Join(outside, "keep.txt")
	if err := os.WriteFile(keep, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, shared.ArtifactsDirOf(job.Host.JobDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := RunWholeJob(t.Context(), &fakeJob{}, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file behind a link at artifacts/: %v; want it kept (the link removed, not followed)", err)
	}

	// A second run refused while the first lives (PrepareRuntime's
	// conflict) leaves the first's artifacts alone, and so does a dry run.
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("earlier run"), 0o644); err != nil {
		t.Fatal(err)
	}
	conflict := &fakeJob{fail: map[string]error{"PrepareRuntime": shared.Errorf(shared.ErrConflict, "instance", "pikaci-0123456789ab", "already has a live run")}}
	if _, err := RunWholeJob(t.Context(), conflict, job, WholeJobOptions{}); !errors.Is(err, shared.ErrConflict) {
		t.Fatalf("error %v, want the conflict", err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("after a run refused as a second run: %v; want the live run's artifacts untouched", err)
	}

	// A dry run changes nothing.
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("earlier run"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RunWholeJob(t.Context(), &fakeJob{}, job, WholeJobOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("after a dry run: %v; want the earlier run's files untouched", err)
	}
}

// What PrepareRuntime says beside its result (a stale instance of an
// earlier run taken over) lands in the record.
func TestRunWholeJobRecordsPrepareRuntimeWarnings(t *testing.T) {
	job := testWholeJob(t)
	msg := `deleted the stale instance "pikaci-0123456789ab" of an earlier run of job "job-1" (no heartbeat for 1m30s: its runner died or lost its connection)`
	f := &fakeJob{runtimeWarnings: []string{msg}}
	if _, err := RunWholeJob(t.Context(), f, job, WholeJobOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{msg}, readRecord(t, job).Warnings); diff != "" {
		t.Errorf("record's warnings (-want +got):\n%s", diff)
	}
}
