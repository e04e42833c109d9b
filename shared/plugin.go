package shared

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pikaci/vmexec/shared/executorpb"
)

// Handshake is what host and plugin must agree on before they talk. The
// magic cookie is not a secret: it only stops a plugin binary run by hand
// from waiting for a host that will never come.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PIKACI_EXECUTOR_PLUGIN",
	MagicCookieValue: "5c0d1f6e8a2b4e79b3a1c7d9e0f24a68",
}

// PluginName is the name an executor is dispensed under in a plugin set.
const PluginName = "executor"

// VersionedPlugins are the protocol versions a host speaks, each with its
// plugin set. go-plugin picks the highest version both sides know: a host
// dispensing from version 1 gets a *GRPCClient (a shared.Executor), from
// version 2 a *GRPCJobClient (a shared.JobExecutor).
var VersionedPlugins = map[int]plugin.PluginSet{
	ProtocolVersion:  {PluginName: &ExecutorPlugin{}},
	ProtocolWholeJob: {PluginName: &JobExecutorPlugin{}},
}

// ExecutorPlugin is the go-plugin glue for an Executor over gRPC. A plugin
// sets Impl; a host leaves it nil and gets a *GRPCClient when it dispenses.
type ExecutorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Executor
	// Protocol, when non-zero, is what Describe reports as the protocol:
	// the version of the plugin set this plugin is served in.
	Protocol int
}

var _ plugin.GRPCPlugin = (*ExecutorPlugin)(nil)

// GRPCServer registers the executor service on the plugin's gRPC server.
func (p *ExecutorPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	executorpb.RegisterExecutorServer(s, &GRPCServer{Impl: p.Impl, Protocol: p.Protocol})
	return nil
}

// GRPCClient returns the host's Executor over the plugin's connection.
func (p *ExecutorPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return NewGRPCClient(conn), nil
}

// JobExecutorPlugin is the go-plugin glue for protocol version 2: a
// JobExecutor over gRPC, serving both the Executor and the WholeJob
// services. A plugin sets Impl; a host leaves it nil and gets a
// *GRPCJobClient when it dispenses. Describe reports protocol 2.
type JobExecutorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl JobExecutor
}

var _ plugin.GRPCPlugin = (*JobExecutorPlugin)(nil)

// GRPCServer registers both services on the plugin's gRPC server.
func (p *JobExecutorPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	executorpb.RegisterExecutorServer(s, &GRPCServer{Impl: p.Impl, Protocol: ProtocolWholeJob})
	executorpb.RegisterWholeJobServer(s, &GRPCJobServer{Impl: p.Impl})
	return nil
}

// GRPCClient returns the host's JobExecutor over the plugin's connection.
func (p *JobExecutorPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return NewGRPCJobClient(conn), nil
}

// ServedVersions are the plugin sets Serve offers for impl: version 1
// always, and version 2 when impl is a JobExecutor.
func ServedVersions(impl Executor) map[int]plugin.PluginSet {
	sets := map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &ExecutorPlugin{Impl: impl, Protocol: ProtocolVersion}},
	}
	if je, ok := impl.(JobExecutor); ok {
		sets[ProtocolWholeJob] = plugin.PluginSet{PluginName: &JobExecutorPlugin{Impl: je}}
	}
	return sets
}

// Serve serves impl as an executor plugin until the host stops it; then,
// if impl is an io.Closer, it closes impl. It speaks ProtocolVersion, and
// also ProtocolWholeJob when impl is a JobExecutor; go-plugin settles on
// the highest version the host speaks too. It is the whole of a plugin's
// main:
//
//	func main() { shared.Serve(myplugin.New(shared.PluginLogger("my-plugin"))) }
//
// The host starts the binary; mTLS between the two is negotiated
// automatically (the host asks for it). Run by hand, the binary says that
// it is a plugin and exits with status 1.
//
// When the host asks it to stop while calls are still running (the host
// gave up on them: a signal, a timeout), their contexts end and Serve
// waits, up to DrainTimeout, for them to return before it closes impl, so a
// call can remove what it had made on its way out (a cancelled stage's
// temporary dir). The host waits as long for the process to exit.
func Serve(impl Executor) {
	var calls Calls
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: ServedVersions(impl),
		GRPCServer:       calls.Server,
		Logger:           PluginLogger("go-plugin"),
	})
	calls.Wait(DrainTimeout)
	if c, ok := impl.(io.Closer); ok {
		_ = c.Close()
	}
}

// DrainTimeout bounds how long a stopping plugin waits for its running
// calls to return (Serve), and so how long a host waits for a plugin it
// stops while a call it gave up on may still be cleaning up. It is above
// the longest cleanup a call does on its way out (30 s to remove a
// cancelled stage's temporary dir).
const DrainTimeout = 40 * time.Second

// Calls counts the executor calls a gRPC server is running (the Executor
// and WholeJob services; not go-plugin's own), so a plugin can let them
// finish before it exits.
type Calls struct{ wg sync.WaitGroup }

// Server is a go-plugin ServeConfig.GRPCServer that counts calls.
func (c *Calls) Server(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if ours(info.FullMethod) {
				c.wg.Add(1)
				defer c.wg.Done()
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if ours(info.FullMethod) {
				c.wg.Add(1)
				defer c.wg.Done()
			}
			return h(srv, ss)
		}))
	return grpc.NewServer(opts...)
}

// ours says whether a gRPC method is one of the executor's services.
func ours(method string) bool {
	return strings.HasPrefix(method, "/"+executorpb.Executor_ServiceDesc.ServiceName+"/") ||
		strings.HasPrefix(method, "/"+executorpb.WholeJob_ServiceDesc.ServiceName+"/")
}

// Wait waits until no call runs, or d passed; it reports whether none runs.
func (c *Calls) Wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// LogLevelEnv is the environment variable through which a host tells its
// plugins the lowest log level it keeps, so they do not send lines it would
// drop anyway.
const LogLevelEnv = "PIKACI_EXECUTOR_LOG_LEVEL"

// PluginLogger returns the logger a plugin should log through: JSON lines
// on the process's stderr, which the host reads and forwards into its own
// logger with each line's level kept. Its level is the host's (LogLevelEnv),
// or info when the host said nothing.
func PluginLogger(name string) hclog.Logger {
	level := hclog.LevelFromString(os.Getenv(LogLevelEnv))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}
