package shared

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-plugin"
)

// fakeJobExecutor is a fakeExecutor that also runs the whole job: it
// records each request and answers as told; runJob, when set, is RunJob.
type fakeJobExecutor struct {
	fakeExecutor

	stage   StageRequest
	runtime RuntimeRequest
	run     RunRequest
	collect CollectRequest
	cleanup CleanupRequest
	sweep   SweepRequest

	stageRes   StageResult
	runtimeRes RuntimeResult
	collectRes CollectResult
	cleanupRes CleanupResult
	sweepRes   SweepResult
	runJob     func(ctx context.Context, out OutputSink) (RunResult, error)
}

var _ JobExecutor = (*fakeJobExecutor)(nil)

func (f *fakeJobExecutor) StageWorkspaceSnapshot(ctx context.Context, req StageRequest) (StageResult, error) {
	f.mu.Lock()
	f.stage = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return StageResult{}, err
	}
	return f.stageRes, nil
}

func (f *fakeJobExecutor) PrepareRuntime(ctx context.Context, req RuntimeRequest) (RuntimeResult, error) {
	f.mu.Lock()
	f.runtime = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return RuntimeResult{}, err
	}
	return f.runtimeRes, nil
}

func (f *fakeJobExecutor) RunJob(ctx context.Context, req RunRequest, out OutputSink) (RunResult, error) {
	f.mu.Lock()
	f.run = req
	f.mu.Unlock()
	if f.runJob != nil {
		return f.runJob(ctx, out)
	}
	if err := f.call(ctx); err != nil {
		return RunResult{}, err
	}
	return RunResult{}, nil
}

func (f *fakeJobExecutor) CollectArtifacts(ctx context.Context, req CollectRequest) (CollectResult, error) {
	f.mu.Lock()
	f.collect = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return f.collectRes, err // what a collection that failed part-way copied
	}
	return f.collectRes, nil
}

func (f *fakeJobExecutor) Cleanup(ctx context.Context, req CleanupRequest) (CleanupResult, error) {
	f.mu.Lock()
	f.cleanup = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return CleanupResult{}, err
	}
	return f.cleanupRes, nil
}

func (f *fakeJobExecutor) Sweep(ctx context.Context, req SweepRequest) (SweepResult, error) {
	f.mu.Lock()
	f.sweep = req
	f.mu.Unlock()
	if err := f.call(ctx); err != nil {
		return SweepResult{}, err
	}
	return f.sweepRes, nil
}

// connectJob serves impl as protocol version 2 over a real gRPC connection
// and returns the host's side of it.
func connectJob(tb testing.TB, impl JobExecutor) JobExecutor {
	tb.Helper()
	exec, _ := connectJobStop(tb, impl)
	return exec
}

// connectJobStop is connectJob that also returns a function that stops the
// server, as a dying plugin would.
func connectJobStop(tb testing.TB, impl JobExecutor) (JobExecutor, func()) {
	tb.Helper()
	client, server := plugin.TestPluginGRPCConn(tb, false, map[string]plugin.Plugin{
		PluginName: &JobExecutorPlugin{Impl: impl},
	})
	tb.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(PluginName)
	if err != nil {
		tb.Fatalf("dispense: %v", err)
	}
	exec, ok := raw.(JobExecutor)
	if !ok {
		tb.Fatalf("dispensed %T, want a JobExecutor", raw)
	}
	return exec, server.Stop
}

func fullWholeJob() WholeJob {
	return WholeJob{
		JobSpec: fullSpec(),
		Runtime: &Runtime{
			Image:            "pikaci/debian-12",
			InstanceType:     "container",
			Profiles:         []string{"ci", "big-disk"},
			Limits:           Limits{CPU: 8, Memory: "16GiB"},
			ReadyTimeoutSecs: 30,
		},
		Command: &Command{
			Argv:        []string{"/bin/sh", "-c", "echo 'hi there'"},
			Env:         map[string]string{"CI": "true", "EMPTY": ""},
			Cwd:         "/workspace/snapshot/sub dir",
			User:        1000,
			TimeoutSecs: 3600,
		},
		Artifacts: &Artifacts{Path: "/run/out", MaxBytes: 5 << 20, MaxFiles: 42, TimeoutSecs: 7},
	}
}

func TestWholeJobRoundTrip(t *testing.T) {
	job := fullWholeJob()
	f := &fakeJobExecutor{
		stageRes: StageResult{SnapshotDir: "/var/tmp/pikaci/snapshots/abc123/snapshot", ContentHash: "abc123", Reused: true, BytesSent: 10240, DryRun: true},
		runtimeRes: RuntimeResult{
			Instance: "pikaci-0123456789ab", Project: "pika-managed-agents",
			Image: Image{Project: "pika-managed-agents", Alias: "pikaci/debian-12", Fingerprint: "18a24b8c"},
			Type:  "container", Profiles: []string{"default", "ci"},
			Config:       map[string]string{"limits.cpu": "8", LabelRun: "run"},
			Devices:      Devices{"pk-snapsh-1": {"type": "disk", "path": "/workspace/snapshot"}},
			StaleDeleted: true, Warnings: []string{"io.bus left out"}, DryRun: true,
		},
		collectRes: CollectResult{Dir: "/tmp/run/jobs/job/artifacts", Files: 7, Bytes: 4096, Warnings: []string{"skipped link a -> /etc/shadow"}},
		cleanupRes: CleanupResult{Instance: "pikaci-0123456789ab", Deleted: true},
		sweepRes: SweepResult{Deleted: []string{"pikaci-a", "pikaci-b"}, DryRun: true,
			Removed: []string{"h:/w/runs/r1"}, Skipped: []string{"h:/w/runs/l: a symlink, not followed"}},
		runJob: func(_ context.Context, out OutputSink) (RunResult, error) {
			return RunResult{ExitCode: 3, TimedOut: true, TimeoutSecs: 3600}, nil
		},
	}
	exec := connectJob(t, f)
	ctx := t.Context()
	opts := cmpopts.EquateEmpty()

	stage, err := exec.StageWorkspaceSnapshot(ctx, StageRequest{Job: job, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	runtime, err := exec.PrepareRuntime(ctx, RuntimeRequest{Job: job, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	run, err := exec.RunJob(ctx, RunRequest{Job: job}, nil)
	if err != nil {
		t.Fatal(err)
	}
	collect, err := exec.CollectArtifacts(ctx, CollectRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	cleanup, err := exec.Cleanup(ctx, CleanupRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	sweepReq := SweepRequest{Remote: job.Remote, OlderThan: 90*time.Minute + time.Nanosecond, Live: []string{"run:job", "r2:j2"}, DryRun: true, WorkDir: "/var/tmp/pikaci"}
	sweep, err := exec.Sweep(ctx, sweepReq)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name      string
		want, got any
	}{
		{"stage request", StageRequest{Job: job, DryRun: true}, f.stage},
		{"runtime request", RuntimeRequest{Job: job, DryRun: true}, f.runtime},
		{"run request", RunRequest{Job: job}, f.run},
		{"collect request", CollectRequest{Job: job}, f.collect},
		{"cleanup request", CleanupRequest{Job: job}, f.cleanup},
		{"sweep request", sweepReq, f.sweep},
		{"stage result", f.stageRes, stage},
		{"runtime result", f.runtimeRes, runtime},
		{"run result", RunResult{ExitCode: 3, TimedOut: true, TimeoutSecs: 3600}, run},
		{"collect result", f.collectRes, collect},
		{"cleanup result", f.cleanupRes, cleanup},
		{"sweep result", f.sweepRes, sweep},
	} {
		if diff := cmp.Diff(c.want, c.got, opts); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
}

// A collection that fails part-way keeps, across the wire, the counts and
// warnings of what it copied beside its error, whose kind and value stay.
func TestCollectArtifactsFailedPartWayKeepsWhatItCopied(t *testing.T) {
	partial := CollectResult{Dir: "/jobs/j/artifacts", Files: 3, Bytes: 17, Warnings: []string{"skipped fifo p"}}
	f := &fakeJobExecutor{collectRes: partial}
	f.err = Errorf(ErrInvalidInput, "artifacts.max_bytes", "10", "artifacts.max_bytes 10 passed")
	exec := connectJob(t, f)
	got, err := exec.CollectArtifacts(t.Context(), CollectRequest{Job: fullWholeJob()})
	if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), "artifacts.max_bytes 10") {
		t.Errorf("error %v: want the plugin's, kind kept", err)
	}
	if diff := cmp.Diff(partial, got); diff != "" {
		t.Errorf("result beside the error (-want +got):\n%s", diff)
	}

	f.collectRes = CollectResult{}
	if got, err := exec.CollectArtifacts(t.Context(), CollectRequest{Job: fullWholeJob()}); err == nil || !cmp.Equal(CollectResult{}, got, cmpopts.EquateEmpty()) {
		t.Errorf("nothing copied: result %+v, error %v; want an empty result and the error", got, err)
	}
}

// An absent runtime, command or artifacts stays absent; a present but
// empty one stays present.
func TestWholeJobKeepsAbsence(t *testing.T) {
	f := &fakeJobExecutor{}
	exec := connectJob(t, f)
	for _, job := range []WholeJob{
		{JobSpec: fullSpec()},
		{JobSpec: fullSpec(), Runtime: &Runtime{}, Command: &Command{}, Artifacts: &Artifacts{}},
	} {
		if _, err := exec.CollectArtifacts(t.Context(), CollectRequest{Job: job}); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(job, f.collect.Job, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("job (-want +got):\n%s", diff)
		}
	}
}

func TestWholeJobErrorsKeepKind(t *testing.T) {
	calls := map[string]func(JobExecutor) error{
		"StageWorkspaceSnapshot": func(e JobExecutor) error {
			_, err := e.StageWorkspaceSnapshot(t.Context(), StageRequest{})
			return err
		},
		"PrepareRuntime": func(e JobExecutor) error { _, err := e.PrepareRuntime(t.Context(), RuntimeRequest{}); return err },
		"RunJob":         func(e JobExecutor) error { _, err := e.RunJob(t.Context(), RunRequest{}, nil); return err },
		"CollectArtifacts": func(e JobExecutor) error {
			_, err := e.CollectArtifacts(t.Context(), CollectRequest{})
			return err
		},
		"Cleanup": func(e JobExecutor) error { _, err := e.Cleanup(t.Context(), CleanupRequest{}); return err },
		"Sweep":   func(e JobExecutor) error { _, err := e.Sweep(t.Context(), SweepRequest{}); return err },
	}
	for _, kind := range Kinds {
		for name, call := range calls {
			t.Run(fmt.Sprintf("%s/%v", name, kind), func(t *testing.T) {
				want := Errorf(kind, "runtime.image", "bb", "image alias %s: %w", Show("bb"), kind)
				exec := connectJob(t, &fakeJobExecutor{fakeExecutor: fakeExecutor{err: want}})
				err := call(exec)
				if !errors.Is(err, kind) {
					t.Fatalf("error %v is not %v", err, kind)
				}
				e, ok := errors.AsType[*Error](err)
				if !ok || e.Field != "runtime.image" || e.Value != "bb" || e.Error() != want.Error() {
					t.Errorf("error %#v, want field runtime.image, value bb, message %q", err, want.Error())
				}
				if errors.Is(err, ErrPluginExited) {
					t.Error("an error the plugin returned says the plugin exited")
				}
			})
		}
	}
}

// Chunks reach the host in order while the job still runs: the fake job
// sends each chunk and waits until the host has it before sending the next
// and before returning.
func TestRunJobStreamsChunksBeforeTheEnd(t *testing.T) {
	chunks := []OutputChunk{
		{Stream: Stdout, Data: []byte("one\n")},
		{Stream: Stderr, Data: []byte("warning: two\n")},
		{Stream: Stdout, Data: []byte("thr")},
		{Stream: Stdout, Data: []byte("ee\n")},
	}
	received := make(chan OutputChunk)
	f := &fakeJobExecutor{runJob: func(ctx context.Context, out OutputSink) (RunResult, error) {
		for i, c := range chunks {
			if err := out(c); err != nil {
				return RunResult{}, err
			}
			select {
			case got := <-received:
				if !cmp.Equal(c, got) {
					return RunResult{}, fmt.Errorf("chunk %d: host got %v, want %v", i, got, c)
				}
			case <-ctx.Done():
				return RunResult{}, ctx.Err()
			case <-time.After(10 * time.Second):
				return RunResult{}, fmt.Errorf("chunk %d did not reach the host while the job ran", i)
			}
		}
		return RunResult{ExitCode: 0}, nil
	}}
	exec := connectJob(t, f)
	var got []OutputChunk
	res, err := exec.RunJob(t.Context(), RunRequest{}, func(c OutputChunk) error {
		got = append(got, c)
		received <- c
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(chunks, got); diff != "" {
		t.Errorf("chunks (-want +got):\n%s", diff)
	}
	if res != (RunResult{}) {
		t.Errorf("result %+v, want exit 0", res)
	}
}

// Chunks from several goroutines each arrive whole, and those of one
// goroutine in its order.
func TestRunJobConcurrentSinks(t *testing.T) {
	const n = 200
	f := &fakeJobExecutor{runJob: func(_ context.Context, out OutputSink) (RunResult, error) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []Stream{Stdout, Stderr} {
			wg.Go(func() {
				for j := range n {
					if err := out(OutputChunk{Stream: s, Data: fmt.Appendf(nil, "%s %d\n", s, j)}); err != nil {
						errs[i] = err
						return
					}
				}
			})
		}
		wg.Wait()
		return RunResult{ExitCode: 1}, errors.Join(errs...)
	}}
	exec := connectJob(t, f)
	next := map[Stream]int{}
	res, err := exec.RunJob(t.Context(), RunRequest{}, func(c OutputChunk) error {
		if want := fmt.Sprintf("%s %d\n", c.Stream, next[c.Stream]); string(c.Data) != want {
			return fmt.Errorf("chunk %q, want %q", c.Data, want)
		}
		next[c.Stream]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 1 || next[Stdout] != n || next[Stderr] != n {
		t.Errorf("exit %d, %d stdout and %d stderr chunks; want 1, %d, %d", res.ExitCode, next[Stdout], next[Stderr], n, n)
	}
}

// Cancelling RunJob on the host cancels the plugin's context; the host
// gets context.Canceled.
func TestRunJobCancelReachesPlugin(t *testing.T) {
	started := make(chan struct{})
	saw := make(chan error, 1)
	f := &fakeJobExecutor{runJob: func(ctx context.Context, out OutputSink) (RunResult, error) {
		if err := out(OutputChunk{Stream: Stdout, Data: []byte("running\n")}); err != nil {
			return RunResult{}, err
		}
		close(started)
		select {
		case <-ctx.Done():
			saw <- ctx.Err()
			return RunResult{}, Errorf(ErrUnavailable, "", "", "job stopped: %w", ctx.Err())
		case <-time.After(30 * time.Second):
			saw <- nil
			return RunResult{}, errors.New("never cancelled")
		}
	}}
	exec := connectJob(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-started
		cancel()
	}()
	_, err := exec.RunJob(ctx, RunRequest{}, func(OutputChunk) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("host error %v, want context.Canceled", err)
	}
	select {
	case got := <-saw:
		if !errors.Is(got, context.Canceled) {
			t.Errorf("plugin's context ended with %v, want context.Canceled", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin's context was not cancelled")
	}
}

// A sink error stops the call as a cancellation would and comes back.
func TestRunJobSinkErrorCancels(t *testing.T) {
	saw := make(chan error, 1)
	f := &fakeJobExecutor{runJob: func(ctx context.Context, out OutputSink) (RunResult, error) {
		_ = out(OutputChunk{Stream: Stderr, Data: []byte("x")})
		select {
		case <-ctx.Done():
			saw <- ctx.Err()
		case <-time.After(30 * time.Second):
			saw <- nil
		}
		return RunResult{}, ctx.Err()
	}}
	exec := connectJob(t, f)
	full := errors.New("disk full")
	_, err := exec.RunJob(t.Context(), RunRequest{}, func(OutputChunk) error { return full })
	if !errors.Is(err, full) {
		t.Errorf("error %v, want the sink's", err)
	}
	if got := <-saw; !errors.Is(got, context.Canceled) {
		t.Errorf("plugin's context ended with %v, want context.Canceled", got)
	}
}

func TestRunJobBadStream(t *testing.T) {
	f := &fakeJobExecutor{runJob: func(_ context.Context, out OutputSink) (RunResult, error) {
		return RunResult{}, out(OutputChunk{Stream: 7, Data: []byte("x")})
	}}
	_, err := connectJob(t, f).RunJob(t.Context(), RunRequest{}, nil)
	if !errors.Is(err, ErrInvalidInput) {
		t.Errorf("error %v, want ErrInvalidInput for stream 7", err)
	}
}

// Serve offers version 2 exactly when the executor runs the whole job, and
// each version's Describe reports that version.
func TestServedVersions(t *testing.T) {
	v1 := ServedVersions(&fakeExecutor{})
	if len(v1) != 1 || v1[ProtocolVersion] == nil {
		t.Errorf("a version 1 executor is served as versions %v, want only 1", keys(v1))
	}
	v2 := ServedVersions(&fakeJobExecutor{})
	if len(v2) != 2 || v2[ProtocolVersion] == nil || v2[ProtocolWholeJob] == nil {
		t.Errorf("a JobExecutor is served as versions %v, want 1 and 2", keys(v2))
	}
	impl := &fakeJobExecutor{fakeExecutor: fakeExecutor{info: Info{Name: "p", Protocol: 9}}}
	for _, version := range []int{ProtocolVersion, ProtocolWholeJob} {
		client, _ := plugin.TestPluginGRPCConn(t, false, ServedVersions(impl)[version])
		t.Cleanup(func() { _ = client.Close() })
		raw, err := client.Dispense(PluginName)
		if err != nil {
			t.Fatal(err)
		}
		_, isJob := raw.(JobExecutor)
		if isJob != (version == ProtocolWholeJob) {
			t.Errorf("version %d dispensed %T", version, raw)
		}
		info, err := raw.(Executor).Describe(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.Protocol != version {
			t.Errorf("version %d: Describe reports protocol %d", version, info.Protocol)
		}
	}
}

func keys(m map[int]plugin.PluginSet) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A plugin that dies while the job streams: the host keeps what arrived
// before, then gets ErrUnavailable wrapping ErrPluginExited.
func TestRunJobPluginDiesMidStream(t *testing.T) {
	var stop func()
	arrived := make(chan struct{})
	f := &fakeJobExecutor{runJob: func(ctx context.Context, out OutputSink) (RunResult, error) {
		if err := out(OutputChunk{Stream: Stdout, Data: []byte("before\n")}); err != nil {
			return RunResult{}, err
		}
		<-arrived // the server dies only once the host has the chunk
		go stop()
		<-ctx.Done()
		return RunResult{}, ctx.Err()
	}}
	exec, s := connectJobStop(t, f)
	stop = s
	var got []string
	_, err := exec.RunJob(t.Context(), RunRequest{}, func(c OutputChunk) error {
		got = append(got, string(c.Data))
		close(arrived)
		return nil
	})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrPluginExited) {
		t.Fatalf("got %v, want an error wrapping ErrUnavailable and ErrPluginExited", err)
	}
	if diff := cmp.Diff([]string{"before\n"}, got); diff != "" {
		t.Errorf("chunks (-want +got):\n%s", diff)
	}
}
