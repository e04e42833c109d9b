package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pikaci/vmexec/shared"
)

// wholeExecutor is the test plugin as a shared.JobExecutor (a name
// containing "whole"): shared.Serve then serves protocols 1 and 2. Its
// instance is a marker file in host.job_dir, so a test can see whether
// Cleanup ran, even across a crash.
type wholeExecutor struct {
	*executor
}

var _ shared.JobExecutor = (*wholeExecutor)(nil)

// instanceMarker is the file that stands for the job's instance.
const instanceMarker = "testplugin-instance"

func (e *wholeExecutor) StageWorkspaceSnapshot(_ context.Context, req shared.StageRequest) (shared.StageResult, error) {
	return shared.StageResult{SnapshotDir: "/remote/snapshot", ContentHash: req.Job.Host.SnapshotContentHash, BytesSent: 1234, DryRun: req.DryRun}, nil
}

// PrepareRuntime fails for the job id "no-image", after creating the
// instance for "fail-after-create".
func (e *wholeExecutor) PrepareRuntime(_ context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	res := shared.RuntimeResult{
		Instance: "pikaci-test",
		Project:  req.Job.Remote.Incus.Project,
		Image:    shared.Image{Project: req.Job.Remote.Incus.Project, Alias: req.Job.Runtime.Image, Fingerprint: "f00d"},
		DryRun:   req.DryRun,
	}
	if req.Job.Job.ID == "no-image" {
		return shared.RuntimeResult{}, shared.Errorf(shared.ErrNotFound, "runtime.image", req.Job.Runtime.Image,
			"image alias %s not found", shared.Show(req.Job.Runtime.Image))
	}
	if req.DryRun {
		return res, nil
	}
	if err := os.WriteFile(filepath.Join(req.Job.Host.JobDir, instanceMarker), nil, 0o644); err != nil {
		return shared.RuntimeResult{}, err
	}
	if req.Job.Job.ID == "fail-after-create" {
		return shared.RuntimeResult{}, shared.Errorf(shared.ErrUnavailable, "instance", "pikaci-test", "instance did not start")
	}
	return res, nil
}

// RunJob does what command.argv[0] says:
//
//	exit N   prints a line on stdout and one on stderr, exits N
//	timeout  prints a line, then reports a timeout
//	block    prints "started (pid N)", then waits for the call's context
//	         to end (a test may kill the plugin meanwhile)
func (e *wholeExecutor) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	argv := req.Job.Command.Argv
	say := func(s shared.Stream, line string) error {
		return out(shared.OutputChunk{Stream: s, Data: []byte(line + "\n")})
	}
	switch argv[0] {
	case "exit":
		code, err := strconv.Atoi(argv[1])
		if err != nil {
			return shared.RunResult{}, err
		}
		if err := say(shared.Stdout, "to stdout"); err != nil {
			return shared.RunResult{}, err
		}
		if err := say(shared.Stderr, "to stderr"); err != nil {
			return shared.RunResult{}, err
		}
		return shared.RunResult{ExitCode: code}, nil
	case "timeout":
		if err := say(shared.Stdout, "started"); err != nil {
			return shared.RunResult{}, err
		}
		return shared.RunResult{ExitCode: 143, TimedOut: true, TimeoutSecs: req.Job.Command.TimeoutSecs}, nil
	case "block":
		if err := say(shared.Stdout, fmt.Sprintf("started (pid %d)", os.Getpid())); err != nil {
			return shared.RunResult{}, err
		}
		<-ctx.Done()
		return shared.RunResult{}, fmt.Errorf("job stopped: %w", ctx.Err())
	}
	return shared.RunResult{}, shared.Errorf(shared.ErrInvalidInput, "command.argv", argv[0], "test plugin: unknown command %s", shared.Show(argv[0]))
}

// CollectArtifacts fails for the job id "over-cap" as artifacts over
// their cap do.
func (e *wholeExecutor) CollectArtifacts(_ context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	if req.Job.Job.ID == "over-cap" {
		return shared.CollectResult{}, shared.Errorf(shared.ErrInvalidInput, "artifacts.max_bytes", "1000",
			"collect artifacts: big takes the artifacts over artifacts.max_bytes 1000")
	}
	return shared.CollectResult{Dir: filepath.Join(req.Job.Host.JobDir, "artifacts"), Files: 1, Bytes: 5}, nil
}

// Cleanup removes the instance marker; Deleted says whether it was there.
func (e *wholeExecutor) Cleanup(_ context.Context, req shared.CleanupRequest) (shared.CleanupResult, error) {
	err := os.Remove(filepath.Join(req.Job.Host.JobDir, instanceMarker))
	if err != nil && !os.IsNotExist(err) {
		return shared.CleanupResult{}, err
	}
	return shared.CleanupResult{Instance: "pikaci-test", Deleted: err == nil}, nil
}

// Sweep names the live jobs it was given as deleted instances, so a test
// sees every field arrive.
func (e *wholeExecutor) Sweep(_ context.Context, req shared.SweepRequest) (shared.SweepResult, error) {
	deleted := []string{fmt.Sprintf("%s/%s older than %v", req.Remote.Host, req.Remote.Incus.Project, req.OlderThan)}
	deleted = append(deleted, req.Live...)
	return shared.SweepResult{Deleted: deleted, DryRun: req.DryRun}, nil
}
