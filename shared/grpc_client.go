package shared

import (
	"context"

	"google.golang.org/grpc"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// GRPCClient is the host's side of the protocol: a shared.Executor whose
// calls go to a plugin over gRPC.
type GRPCClient struct {
	client executorpb.ExecutorClient
}

var _ Executor = (*GRPCClient)(nil)

// NewGRPCClient returns an Executor that calls the plugin served on conn.
func NewGRPCClient(conn grpc.ClientConnInterface) *GRPCClient {
	return &GRPCClient{client: executorpb.NewExecutorClient(conn)}
}

// Describe implements Executor.
func (c *GRPCClient) Describe(ctx context.Context) (Info, error) {
	resp, err := c.client.Describe(ctx, &executorpb.DescribeRequest{})
	if err != nil {
		return Info{}, fromStatus("Describe", err)
	}
	return Info{
		Name:         resp.GetName(),
		Version:      resp.GetVersion(),
		Protocol:     int(resp.GetProtocol()),
		Capabilities: resp.GetCapabilities(),
	}, nil
}

// Configure implements Executor.
func (c *GRPCClient) Configure(ctx context.Context, s Settings) error {
	_, err := c.client.Configure(ctx, &executorpb.ConfigureRequest{Settings: &executorpb.Settings{
		SshConfigPath:      s.SSHConfigPath,
		MaxSessionsPerHost: int64(s.MaxSessionsPerHost),
	}})
	if err != nil {
		return fromStatus("Configure", err)
	}
	return nil
}

// PrepareDirectories implements Executor.
func (c *GRPCClient) PrepareDirectories(ctx context.Context, req PrepareRequest) (PrepareResult, error) {
	resp, err := c.client.PrepareDirectories(ctx, &executorpb.PrepareRequest{
		Spec:   specToProto(req.Spec),
		DryRun: req.DryRun,
	})
	if err != nil {
		return PrepareResult{}, fromStatus("PrepareDirectories", err)
	}
	return PrepareResult{
		Command:     resp.GetCommand(),
		Directories: resp.GetDirectories(),
		DryRun:      resp.GetDryRun(),
		Placement:   placementFromProto(resp.GetPlacement()),
	}, nil
}

// ConfigureDevices implements Executor.
func (c *GRPCClient) ConfigureDevices(ctx context.Context, req DevicesRequest) (DevicesResult, error) {
	resp, err := c.client.ConfigureDevices(ctx, &executorpb.DevicesRequest{
		Spec:   specToProto(req.Spec),
		DryRun: req.DryRun,
	})
	if err != nil {
		return DevicesResult{}, fromStatus("ConfigureDevices", err)
	}
	return DevicesResult{
		Instance: resp.GetInstance(),
		Project:  resp.GetProject(),
		Devices:  devicesFromProto(resp.GetDevices()),
		Planned:  devicesFromProto(resp.GetPlanned()),
		Changed:  resp.GetChanged(),
		Warnings: resp.GetWarnings(),
		DryRun:   resp.GetDryRun(),
	}, nil
}
