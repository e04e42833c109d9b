package testharness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// BringUpWarning is what every run without mutual TLS says, first and
// last: it is for bringing a new plugin up, and never a conformance pass.
const BringUpWarning = "WARNING: --insecure-bringup-no-mtls: the plugin was started WITHOUT mutual TLS (no PLUGIN_CLIENT_CERT), " +
	"for bring-up only; this run is NOT a conformance pass, whatever its results"

// StartError is a plugin that did not start: the handshake, the TLS
// connection or the first calls failed. The handshake doctor
// (testharness/doctor) says why.
type StartError struct {
	Plugin string
	Err    error
}

func (e *StartError) Error() string { return fmt.Sprintf("start plugin %s: %v", e.Plugin, e.Err) }
func (e *StartError) Unwrap() error { return e.Err }

// startedPlugin is a plugin process the harness talks to.
type startedPlugin interface {
	shared.Executor
	Close() error
}

// startPlugin starts cfg.Plugin as a host does, or without mutual TLS
// for bring-up.
func startPlugin(ctx context.Context, cfg Config) (startedPlugin, error) {
	abs, err := filepath.Abs(cfg.Plugin)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", cfg.Plugin, err)
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	}
	if cfg.InsecureNoMTLS {
		p, err := startWithoutMTLS(ctx, abs, log)
		if err != nil {
			return nil, &StartError{Plugin: cfg.Plugin, Err: err}
		}
		return p, nil
	}
	p, err := host.DispenseFile(ctx, cfg.Plugin, host.Options{Logger: log})
	if err != nil {
		return nil, &StartError{Plugin: cfg.Plugin, Err: err}
	}
	return p, nil
}

// bringUp is a plugin started without mutual TLS.
type bringUp struct {
	shared.Executor
	client *plugin.Client
	proto  int
}

func (b *bringUp) Protocol() int { return b.proto }
func (b *bringUp) Close() error  { b.client.Kill(); return nil }

// bringUpJob is one that speaks the whole job.
type bringUpJob struct {
	shared.JobExecutor
	client *plugin.Client
	proto  int
}

func (b *bringUpJob) Protocol() int { return b.proto }
func (b *bringUpJob) Close() error  { b.client.Kill(); return nil }

// startWithoutMTLS starts the plugin with go-plugin's handshake but no
// PLUGIN_CLIENT_CERT: it serves plain gRPC. For bring-up only.
func startWithoutMTLS(ctx context.Context, path string, log hclog.Logger) (startedPlugin, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: shared.VersionedPlugins,
		Cmd:              exec.Command(path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     host.DefaultStartTimeout,
		Logger:           log,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, err
	}
	raw, err := rpc.Dispense(shared.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispense %q: %w", shared.PluginName, err)
	}
	proto := client.NegotiatedVersion()
	if je, ok := raw.(shared.JobExecutor); ok && proto >= shared.ProtocolWholeJob {
		if _, err := je.Describe(ctx); err != nil {
			client.Kill()
			return nil, fmt.Errorf("describe: %w", err)
		}
		return &bringUpJob{JobExecutor: je, client: client, proto: proto}, nil
	}
	e, ok := raw.(shared.Executor)
	if !ok {
		client.Kill()
		return nil, errors.New("dispensed " + fmt.Sprintf("%T", raw) + ", not a shared.Executor")
	}
	if _, err := e.Describe(ctx); err != nil {
		client.Kill()
		return nil, fmt.Errorf("describe: %w", err)
	}
	return &bringUp{Executor: e, client: client, proto: proto}, nil
}
