package shared

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/pikaci/vmexec/shared/executorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrPluginExited marks an error from a call whose plugin process crashed
// or exited before it answered. Such an error also wraps ErrUnavailable.
var ErrPluginExited = errors.New("plugin process exited")

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

func specToProto(s JobSpec) *executorpb.JobSpec {
	payloads := make([]*executorpb.StagedPayload, len(s.Host.StagedPayloads))
	for i, p := range s.Host.StagedPayloads {
		payloads[i] = &executorpb.StagedPayload{Name: p.Name, LocalDir: p.LocalDir}
	}
	return &executorpb.JobSpec{
		Job: &executorpb.Job{
			Id:                s.Job.ID,
			Staged:            s.Job.Staged,
			WritableWorkspace: s.Job.WritableWorkspace,
		},
		Host: &executorpb.HostPaths{
			JobDir:              s.Host.JobDir,
			SnapshotContentHash: s.Host.SnapshotContentHash,
			StagedPayloads:      payloads,
			SnapshotDir:         s.Host.SnapshotDir,
		},
		Remote: &executorpb.Remote{
			Host:    s.Remote.Host,
			WorkDir: s.Remote.WorkDir,
			Incus: &executorpb.Incus{
				Project:    s.Remote.Incus.Project,
				Endpoint:   s.Remote.Incus.Endpoint,
				ClientCert: s.Remote.Incus.ClientCert,
				ClientKey:  s.Remote.Incus.ClientKey,
				ServerCert: s.Remote.Incus.ServerCert,
			},
		},
	}
}

func specFromProto(s *executorpb.JobSpec) JobSpec {
	var payloads []StagedPayload
	if ps := s.GetHost().GetStagedPayloads(); ps != nil {
		payloads = make([]StagedPayload, len(ps))
		for i, p := range ps {
			payloads[i] = StagedPayload{Name: p.GetName(), LocalDir: p.GetLocalDir()}
		}
	}
	incus := s.GetRemote().GetIncus()
	return JobSpec{
		Job: Job{
			ID:                s.GetJob().GetId(),
			Staged:            s.GetJob().GetStaged(),
			WritableWorkspace: s.GetJob().GetWritableWorkspace(),
		},
		Host: HostPaths{
			JobDir:              s.GetHost().GetJobDir(),
			SnapshotContentHash: s.GetHost().GetSnapshotContentHash(),
			StagedPayloads:      payloads,
			SnapshotDir:         s.GetHost().GetSnapshotDir(),
		},
		Remote: Remote{
			Host:    s.GetRemote().GetHost(),
			WorkDir: s.GetRemote().GetWorkDir(),
			Incus: Incus{
				Project:    incus.GetProject(),
				Endpoint:   incus.GetEndpoint(),
				ClientCert: incus.GetClientCert(),
				ClientKey:  incus.GetClientKey(),
				ServerCert: incus.GetServerCert(),
			},
		},
	}
}

func devicesToProto(d Devices) map[string]*executorpb.Device {
	if d == nil {
		return nil
	}
	out := make(map[string]*executorpb.Device, len(d))
	for name, config := range d {
		out[name] = &executorpb.Device{Config: config}
	}
	return out
}

// devicesFromProto never returns a nil map, nor a nil config: protobuf
// cannot tell an empty map from an absent one, and an instance without
// devices has an empty device map, not none.
func devicesFromProto(d map[string]*executorpb.Device) Devices {
	out := make(Devices, len(d))
	for name, dev := range d {
		config := dev.GetConfig()
		if config == nil {
			config = map[string]string{}
		}
		out[name] = config
	}
	return out
}

var kindToProto = map[error]executorpb.ErrorKind{
	ErrInvalidInput: executorpb.ErrorKind_ERROR_KIND_INVALID_INPUT,
	ErrNotFound:     executorpb.ErrorKind_ERROR_KIND_NOT_FOUND,
	ErrConflict:     executorpb.ErrorKind_ERROR_KIND_CONFLICT,
	ErrPermission:   executorpb.ErrorKind_ERROR_KIND_PERMISSION,
	ErrUnavailable:  executorpb.ErrorKind_ERROR_KIND_UNAVAILABLE,
}

var kindFromProto = map[executorpb.ErrorKind]error{
	executorpb.ErrorKind_ERROR_KIND_INVALID_INPUT: ErrInvalidInput,
	executorpb.ErrorKind_ERROR_KIND_NOT_FOUND:     ErrNotFound,
	executorpb.ErrorKind_ERROR_KIND_CONFLICT:      ErrConflict,
	executorpb.ErrorKind_ERROR_KIND_PERMISSION:    ErrPermission,
	executorpb.ErrorKind_ERROR_KIND_UNAVAILABLE:   ErrUnavailable,
}

var kindToCode = map[error]codes.Code{
	ErrInvalidInput: codes.InvalidArgument,
	ErrNotFound:     codes.NotFound,
	ErrConflict:     codes.Aborted,
	ErrPermission:   codes.PermissionDenied,
	ErrUnavailable:  codes.Unavailable,
}

// toStatus turns an executor's error into the gRPC status the host
// receives: a code for generic gRPC tooling and an ErrorDetail that carries
// what errors.Is and errors.As need on the other side.
func toStatus(err error) error {
	detail := &executorpb.ErrorDetail{}
	code := codes.Unknown
	if kind := KindOf(err); kind != nil {
		detail.Kind = kindToProto[kind]
		code = kindToCode[kind]
	}
	if e, ok := errors.AsType[*Error](err); ok {
		detail.Field, detail.Value = e.Field, e.Value
	}
	switch {
	case errors.Is(err, context.Canceled):
		detail.Context = executorpb.ContextError_CONTEXT_ERROR_CANCELED
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		detail.Context = executorpb.ContextError_CONTEXT_ERROR_DEADLINE_EXCEEDED
		code = codes.DeadlineExceeded
	}
	st, derr := status.New(code, err.Error()).WithDetails(detail)
	if derr != nil {
		// Only a detail that cannot be marshalled gets here; the code and
		// message still travel.
		return status.Error(code, err.Error())
	}
	return st.Err()
}

// fromStatus turns a failed call's gRPC error back into the error the
// plugin returned: the same kind, field, value and message, and the same
// context error when there was one. A call that never got an answer because
// the plugin died comes back as ErrUnavailable wrapping ErrPluginExited.
func fromStatus(method string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("plugin call %s: %w", method, err)
	}
	var detail *executorpb.ErrorDetail
	for _, d := range st.Details() {
		if ed, ok := d.(*executorpb.ErrorDetail); ok {
			detail = ed
			break
		}
	}
	if detail == nil {
		// No detail: the status comes from gRPC itself, not from our server.
		switch st.Code() {
		case codes.Canceled:
			return &contextError{msg: st.Message(), err: context.Canceled}
		case codes.DeadlineExceeded:
			return &contextError{msg: st.Message(), err: context.DeadlineExceeded}
		case codes.Unavailable:
			return Errorf(ErrUnavailable, "", "", "plugin crashed or exited during %s (%s): %w",
				method, st.Message(), ErrPluginExited)
		}
		return fmt.Errorf("plugin call %s: %w", method, err)
	}

	var ctxErr error
	switch detail.GetContext() {
	case executorpb.ContextError_CONTEXT_ERROR_CANCELED:
		ctxErr = context.Canceled
	case executorpb.ContextError_CONTEXT_ERROR_DEADLINE_EXCEEDED:
		ctxErr = context.DeadlineExceeded
	}
	kind := kindFromProto[detail.GetKind()]
	switch {
	case kind != nil && ctxErr != nil:
		return Errorf(kind, detail.GetField(), detail.GetValue(), "%w", &contextError{msg: st.Message(), err: ctxErr})
	case kind != nil:
		return NewError(kind, detail.GetField(), detail.GetValue(), st.Message())
	case ctxErr != nil:
		return &contextError{msg: st.Message(), err: ctxErr}
	}
	return &remoteError{msg: st.Message(), code: st.Code()}
}

// contextError keeps a plugin's message and wraps the context error it
// stands for.
type contextError struct {
	msg string
	err error
}

func (e *contextError) Error() string { return e.msg }
func (e *contextError) Unwrap() error { return e.err }

// remoteError is a plugin error of no known kind. It keeps its status so
// that gRPC tooling (status.FromError) still sees the code.
type remoteError struct {
	msg  string
	code codes.Code
}

func (e *remoteError) Error() string              { return e.msg }
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }
