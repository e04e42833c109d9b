package shared

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// GRPCJobClient is the host's side of protocol version 2: a JobExecutor
// whose calls go to a plugin over gRPC. Its version 1 calls are
// GRPCClient's.
type GRPCJobClient struct {
	*GRPCClient
	job executorpb.WholeJobClient
}

var _ JobExecutor = (*GRPCJobClient)(nil)

// NewGRPCJobClient returns a JobExecutor that calls the plugin served on
// conn, which must serve both the Executor and the WholeJob services.
func NewGRPCJobClient(conn grpc.ClientConnInterface) *GRPCJobClient {
	return &GRPCJobClient{GRPCClient: NewGRPCClient(conn), job: executorpb.NewWholeJobClient(conn)}
}

// StageWorkspaceSnapshot implements JobExecutor.
func (c *GRPCJobClient) StageWorkspaceSnapshot(ctx context.Context, req StageRequest) (StageResult, error) {
	resp, err := c.job.StageWorkspaceSnapshot(ctx, &executorpb.StageRequest{Job: wholeJobToProto(req.Job), DryRun: req.DryRun})
	if err != nil {
		return StageResult{}, fromStatus("StageWorkspaceSnapshot", err)
	}
	return StageResult{
		SnapshotDir: resp.GetSnapshotDir(),
		ContentHash: resp.GetContentHash(),
		Reused:      resp.GetReused(),
		BytesSent:   resp.GetBytesSent(),
		DryRun:      resp.GetDryRun(),
		Placement:   placementFromProto(resp.GetPlacement()),
	}, nil
}

// PrepareRuntime implements JobExecutor.
func (c *GRPCJobClient) PrepareRuntime(ctx context.Context, req RuntimeRequest) (RuntimeResult, error) {
	resp, err := c.job.PrepareRuntime(ctx, &executorpb.RuntimeRequest{Job: wholeJobToProto(req.Job), DryRun: req.DryRun})
	if err != nil {
		return RuntimeResult{}, fromStatus("PrepareRuntime", err)
	}
	img := resp.GetImage()
	return RuntimeResult{
		Instance:     resp.GetInstance(),
		Project:      resp.GetProject(),
		Image:        Image{Project: img.GetProject(), Alias: img.GetAlias(), Fingerprint: img.GetFingerprint()},
		Type:         resp.GetType(),
		Profiles:     resp.GetProfiles(),
		Config:       resp.GetConfig(),
		Devices:      devicesFromProto(resp.GetDevices()),
		StaleDeleted: resp.GetStaleDeleted(),
		Placement:    placementFromProto(resp.GetPlacement()),
		Warnings:     resp.GetWarnings(),
		DryRun:       resp.GetDryRun(),
	}, nil
}

// RunJob implements JobExecutor. Each chunk is passed to out as soon as it
// arrives, on the calling goroutine. When out fails, the call is cancelled
// (the plugin stops the job as on any cancellation) and its error returned.
func (c *GRPCJobClient) RunJob(ctx context.Context, req RunRequest, out OutputSink) (RunResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.job.RunJob(ctx, &executorpb.RunRequest{Job: wholeJobToProto(req.Job)})
	if err != nil {
		return RunResult{}, fromStatus("RunJob", err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return RunResult{}, Errorf(ErrUnavailable, "", "", "plugin ended RunJob without a result")
		}
		if err != nil {
			return RunResult{}, fromStatus("RunJob", err)
		}
		switch e := ev.GetEvent().(type) {
		case *executorpb.RunEvent_Output:
			s, ok := streamFromProto[e.Output.GetStream()]
			if !ok {
				return RunResult{}, Errorf(ErrInvalidInput, "stream", e.Output.GetStream().String(),
					"plugin sent output of unknown stream %s", e.Output.GetStream())
			}
			if out == nil {
				continue
			}
			if err := out(OutputChunk{Stream: s, Data: e.Output.GetData()}); err != nil {
				cancel()
				return RunResult{}, fmt.Errorf("RunJob: writing the job's %s: %w", s, err)
			}
		case *executorpb.RunEvent_Result:
			r := e.Result
			// The result is the stream's last message; reading on lets the
			// call end with its status instead of being cancelled.
			_, _ = stream.Recv()
			return RunResult{
				ExitCode:    int(r.GetExitCode()),
				TimedOut:    r.GetTimedOut(),
				TimeoutSecs: int(r.GetTimeoutSecs()),
			}, nil
		default:
			return RunResult{}, Errorf(ErrInvalidInput, "event", fmt.Sprintf("%T", e),
				"plugin sent a RunJob event of unknown type %T", e)
		}
	}
}

// CollectArtifacts implements JobExecutor.
func (c *GRPCJobClient) CollectArtifacts(ctx context.Context, req CollectRequest) (CollectResult, error) {
	resp, err := c.job.CollectArtifacts(ctx, &executorpb.CollectRequest{Job: wholeJobToProto(req.Job)})
	if err != nil {
		// A collection that failed part-way says what it copied.
		resp = detailOf[*executorpb.CollectResult](err)
		err = fromStatus("CollectArtifacts", err)
		if resp == nil {
			return CollectResult{}, err
		}
	}
	return CollectResult{
		Dir:      resp.GetDir(),
		Files:    int(resp.GetFiles()),
		Bytes:    resp.GetBytes(),
		Warnings: resp.GetWarnings(),
	}, err
}

// Cleanup implements JobExecutor.
func (c *GRPCJobClient) Cleanup(ctx context.Context, req CleanupRequest) (CleanupResult, error) {
	resp, err := c.job.Cleanup(ctx, &executorpb.CleanupRequest{Job: wholeJobToProto(req.Job)})
	if err != nil {
		return CleanupResult{}, fromStatus("Cleanup", err)
	}
	return CleanupResult{Instance: resp.GetInstance(), Deleted: resp.GetDeleted()}, nil
}

// Sweep implements JobExecutor.
func (c *GRPCJobClient) Sweep(ctx context.Context, req SweepRequest) (SweepResult, error) {
	resp, err := c.job.Sweep(ctx, &executorpb.SweepRequest{
		Remote:      remoteToProto(req.Remote),
		OlderThanNs: int64(req.OlderThan),
		Live:        req.Live,
		DryRun:      req.DryRun,
		WorkDir:     req.WorkDir,
	})
	if err != nil {
		// A sweep that failed in part says what it did.
		resp = detailOf[*executorpb.SweepResult](err)
		err = fromStatus("Sweep", err)
		if resp == nil {
			return SweepResult{}, err
		}
	}
	return SweepResult{Deleted: resp.GetDeleted(), DryRun: resp.GetDryRun(), Unreachable: resp.GetUnreachable(),
		Removed: resp.GetRemoved(), Skipped: resp.GetSkipped()}, err
}
