package shared

import (
	"context"
	"fmt"
	"math"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// GRPCServer is the plugin's side of the protocol: it serves an Executor
// to the host. Errors leave it as a gRPC status whose code follows the
// error's kind and whose ErrorDetail lets the host rebuild the same error.
type GRPCServer struct {
	executorpb.UnimplementedExecutorServer
	Impl Executor
	// Protocol, when non-zero, is the protocol Describe reports instead of
	// the one Impl names: the version go-plugin negotiated, which is the
	// version of the plugin set this server was registered from.
	Protocol int
}

// Describe implements executorpb.ExecutorServer.
func (s *GRPCServer) Describe(ctx context.Context, _ *executorpb.DescribeRequest) (*executorpb.Info, error) {
	info, err := s.Impl.Describe(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if s.Protocol != 0 {
		info.Protocol = s.Protocol
	}
	return &executorpb.Info{
		Name:         info.Name,
		Version:      info.Version,
		Protocol:     int64(info.Protocol),
		Capabilities: info.Capabilities,
	}, nil
}

// Configure implements executorpb.ExecutorServer.
func (s *GRPCServer) Configure(ctx context.Context, req *executorpb.ConfigureRequest) (*executorpb.ConfigureResponse, error) {
	n := req.GetSettings().GetMaxSessionsPerHost()
	if n < 0 || n > math.MaxInt32 {
		return nil, toStatus(Errorf(ErrInvalidInput, "max_sessions_per_host", fmt.Sprint(n),
			"max_sessions_per_host %d is out of range", n))
	}
	err := s.Impl.Configure(ctx, Settings{
		SSHConfigPath:      req.GetSettings().GetSshConfigPath(),
		MaxSessionsPerHost: int(n),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.ConfigureResponse{}, nil
}

// PrepareDirectories implements executorpb.ExecutorServer.
func (s *GRPCServer) PrepareDirectories(ctx context.Context, req *executorpb.PrepareRequest) (*executorpb.PrepareResult, error) {
	res, err := s.Impl.PrepareDirectories(ctx, PrepareRequest{
		Spec:   specFromProto(req.GetSpec()),
		DryRun: req.GetDryRun(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.PrepareResult{
		Command:     res.Command,
		Directories: res.Directories,
		DryRun:      res.DryRun,
		Placement:   placementToProto(res.Placement),
	}, nil
}

// ConfigureDevices implements executorpb.ExecutorServer.
func (s *GRPCServer) ConfigureDevices(ctx context.Context, req *executorpb.DevicesRequest) (*executorpb.DevicesResult, error) {
	res, err := s.Impl.ConfigureDevices(ctx, DevicesRequest{
		Spec:   specFromProto(req.GetSpec()),
		DryRun: req.GetDryRun(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &executorpb.DevicesResult{
		Instance: res.Instance,
		Project:  res.Project,
		Devices:  devicesToProto(res.Devices),
		Planned:  devicesToProto(res.Planned),
		Changed:  res.Changed,
		Warnings: res.Warnings,
		DryRun:   res.DryRun,
	}, nil
}
