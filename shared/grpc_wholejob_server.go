package shared

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// GRPCJobServer is the plugin's side of protocol version 2: it serves the
// WholeJob service of a JobExecutor (GRPCServer serves its Executor
// service). Errors leave it as GRPCServer's do, RunJob's included.
type GRPCJobServer struct {
	executorpb.UnimplementedWholeJobServer
	Impl JobExecutor
}

// StageWorkspaceSnapshot implements executorpb.WholeJobServer.
func (s *GRPCJobServer) StageWorkspaceSnapshot(ctx context.Context, req *executorpb.StageRequest) (*executorpb.StageResult, error) {
	res, err := s.Impl.StageWorkspaceSnapshot(ctx, StageRequest{Job: wholeJobFromProto(req.GetJob()), DryRun: req.GetDryRun()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.StageResult{
		SnapshotDir: res.SnapshotDir,
		ContentHash: res.ContentHash,
		Reused:      res.Reused,
		BytesSent:   res.BytesSent,
		DryRun:      res.DryRun,
		Placement:   placementToProto(res.Placement),
	}, nil
}

// PrepareRuntime implements executorpb.WholeJobServer.
func (s *GRPCJobServer) PrepareRuntime(ctx context.Context, req *executorpb.RuntimeRequest) (*executorpb.RuntimeResult, error) {
	res, err := s.Impl.PrepareRuntime(ctx, RuntimeRequest{Job: wholeJobFromProto(req.GetJob()), DryRun: req.GetDryRun()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.RuntimeResult{
		Instance:     res.Instance,
		Project:      res.Project,
		Image:        &executorpb.Image{Project: res.Image.Project, Alias: res.Image.Alias, Fingerprint: res.Image.Fingerprint},
		Type:         res.Type,
		Profiles:     res.Profiles,
		Config:       res.Config,
		Devices:      devicesToProto(res.Devices),
		StaleDeleted: res.StaleDeleted,
		Placement:    placementToProto(res.Placement),
		Warnings:     res.Warnings,
		DryRun:       res.DryRun,
	}, nil
}

// RunJob implements executorpb.WholeJobServer: every chunk the executor
// passes to its sink is sent before the sink returns, in the order of the
// sink's calls (which may come from several goroutines); the result is sent
// last. The stream's context ends when the host cancels the call.
func (s *GRPCJobServer) RunJob(req *executorpb.RunRequest, stream grpc.ServerStreamingServer[executorpb.RunEvent]) error {
	var mu sync.Mutex
	done := false
	sink := func(c OutputChunk) error {
		st, ok := streamToProto[c.Stream]
		if !ok {
			return Errorf(ErrInvalidInput, "stream", fmt.Sprint(int(c.Stream)), "output chunk of unknown stream %d", int(c.Stream))
		}
		mu.Lock()
		defer mu.Unlock()
		if done {
			return Errorf(ErrInvalidInput, "stream", c.Stream.String(), "output chunk after RunJob returned")
		}
		// SendMsg encodes the message before it returns, so the caller
		// may reuse c.Data afterwards.
		return stream.Send(&executorpb.RunEvent{Event: &executorpb.RunEvent_Output{
			Output: &executorpb.OutputChunk{Stream: st, Data: c.Data},
		}})
	}
	res, err := s.Impl.RunJob(stream.Context(), RunRequest{Job: wholeJobFromProto(req.GetJob())}, sink)
	mu.Lock()
	defer mu.Unlock()
	done = true
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&executorpb.RunEvent{Event: &executorpb.RunEvent_Result{Result: &executorpb.RunResult{
		ExitCode:    int64(res.ExitCode),
		TimedOut:    res.TimedOut,
		TimeoutSecs: int64(res.TimeoutSecs),
	}}})
}

// CollectArtifacts implements executorpb.WholeJobServer.
func (s *GRPCJobServer) CollectArtifacts(ctx context.Context, req *executorpb.CollectRequest) (*executorpb.CollectResult, error) {
	res, err := s.Impl.CollectArtifacts(ctx, CollectRequest{Job: wholeJobFromProto(req.GetJob())})
	out := &executorpb.CollectResult{
		Dir:      res.Dir,
		Files:    int64(res.Files),
		Bytes:    res.Bytes,
		Warnings: res.Warnings,
	}
	if err != nil {
		// What was copied before the failure travels with it.
		return nil, toStatus(err, out)
	}
	return out, nil
}

// Cleanup implements executorpb.WholeJobServer.
func (s *GRPCJobServer) Cleanup(ctx context.Context, req *executorpb.CleanupRequest) (*executorpb.CleanupResult, error) {
	res, err := s.Impl.Cleanup(ctx, CleanupRequest{Job: wholeJobFromProto(req.GetJob())})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.CleanupResult{Instance: res.Instance, Deleted: res.Deleted}, nil
}

// Sweep implements executorpb.WholeJobServer.
func (s *GRPCJobServer) Sweep(ctx context.Context, req *executorpb.SweepRequest) (*executorpb.SweepResult, error) {
	res, err := s.Impl.Sweep(ctx, SweepRequest{
		Remote:    remoteFromProto(req.GetRemote()),
		OlderThan: time.Duration(req.GetOlderThanNs()),
		Live:      req.GetLive(),
		DryRun:    req.GetDryRun(),
		WorkDir:   req.GetWorkDir(),
	})
	out := &executorpb.SweepResult{Deleted: res.Deleted, DryRun: res.DryRun, Unreachable: res.Unreachable, Removed: res.Removed, Skipped: res.Skipped}
	if err != nil {
		// What a sweep that failed in part did travels with the error.
		return nil, toStatus(err, out)
	}
	return out, nil
}
