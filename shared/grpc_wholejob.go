package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

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
		return CollectResult{}, fromStatus("CollectArtifacts", err)
	}
	return CollectResult{
		Dir:      resp.GetDir(),
		Files:    int(resp.GetFiles()),
		Bytes:    resp.GetBytes(),
		Warnings: resp.GetWarnings(),
	}, nil
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
	})
	if err != nil {
		return SweepResult{}, fromStatus("Sweep", err)
	}
	return SweepResult{Deleted: resp.GetDeleted(), DryRun: resp.GetDryRun()}, nil
}

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
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.CollectResult{
		Dir:      res.Dir,
		Files:    int64(res.Files),
		Bytes:    res.Bytes,
		Warnings: res.Warnings,
	}, nil
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
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.SweepResult{Deleted: res.Deleted, DryRun: res.DryRun}, nil
}

var streamToProto = map[Stream]executorpb.Stream{
	Stdout: executorpb.Stream_STREAM_STDOUT,
	Stderr: executorpb.Stream_STREAM_STDERR,
}

var streamFromProto = map[executorpb.Stream]Stream{
	executorpb.Stream_STREAM_STDOUT: Stdout,
	executorpb.Stream_STREAM_STDERR: Stderr,
}

func remoteToProto(r Remote) *executorpb.Remote {
	return specToProto(JobSpec{Remote: r}).GetRemote()
}

func remoteFromProto(r *executorpb.Remote) Remote {
	return specFromProto(&executorpb.JobSpec{Remote: r}).Remote
}

// wholeJobToProto keeps an absent runtime, command or artifacts absent.
func wholeJobToProto(w WholeJob) *executorpb.WholeJobSpec {
	out := &executorpb.WholeJobSpec{Spec: specToProto(w.JobSpec)}
	if r := w.Runtime; r != nil {
		out.Runtime = &executorpb.Runtime{
			Image:            r.Image,
			InstanceType:     r.InstanceType,
			Profiles:         r.Profiles,
			Limits:           &executorpb.Limits{Cpu: int64(r.Limits.CPU), Memory: r.Limits.Memory},
			ReadyTimeoutSecs: int64(r.ReadyTimeoutSecs),
		}
	}
	if c := w.Command; c != nil {
		out.Command = &executorpb.Command{
			Argv:        c.Argv,
			Env:         c.Env,
			Cwd:         c.Cwd,
			User:        int64(c.User),
			TimeoutSecs: int64(c.TimeoutSecs),
		}
	}
	if a := w.Artifacts; a != nil {
		out.Artifacts = &executorpb.Artifacts{Path: a.Path, MaxBytes: a.MaxBytes}
	}
	return out
}

func wholeJobFromProto(w *executorpb.WholeJobSpec) WholeJob {
	out := WholeJob{JobSpec: specFromProto(w.GetSpec())}
	if r := w.GetRuntime(); r != nil {
		out.Runtime = &Runtime{
			Image:            r.GetImage(),
			InstanceType:     r.GetInstanceType(),
			Profiles:         r.GetProfiles(),
			Limits:           Limits{CPU: int(r.GetLimits().GetCpu()), Memory: r.GetLimits().GetMemory()},
			ReadyTimeoutSecs: int(r.GetReadyTimeoutSecs()),
		}
	}
	if c := w.GetCommand(); c != nil {
		out.Command = &Command{
			Argv:        c.GetArgv(),
			Env:         c.GetEnv(),
			Cwd:         c.GetCwd(),
			User:        int(c.GetUser()),
			TimeoutSecs: int(c.GetTimeoutSecs()),
		}
	}
	if a := w.GetArtifacts(); a != nil {
		out.Artifacts = &Artifacts{Path: a.GetPath(), MaxBytes: a.GetMaxBytes()}
	}
	return out
}
