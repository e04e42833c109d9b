// Command testplugin is an executor plugin for the host tests. What it is
// depends on its file name, executor-<name>: a name containing "whole" is a
// shared.JobExecutor served by shared.Serve (protocols 1 and 2, see
// wholejob.go), one containing "v3only" or "v2only" serves that protocol
// version only, one containing "v12" serves versions 1 and 2, any other
// serves version 1 through shared.Serve. What a call does depends on the
// job id it is given (see PrepareDirectories).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// childEnv makes the binary a child process that waits to be killed.
const childEnv = "TESTPLUGIN_CHILD"

func main() {
	if os.Getenv(childEnv) != "" {
		signal.Ignore() // only SIGKILL ends it
		select {}
	}
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "executor-")
	logger := shared.PluginLogger(name)
	impl := func(protocol int) *executor {
		return &executor{name: name, protocol: protocol, logger: logger}
	}
	switch {
	case strings.Contains(name, "whole"):
		shared.Serve(&wholeExecutor{impl(shared.ProtocolWholeJob)})
	case strings.Contains(name, "v3only"):
		serve(map[int]plugin.PluginSet{3: {shared.PluginName: &shared.ExecutorPlugin{Impl: impl(3)}}})
	case strings.Contains(name, "v2only"):
		serve(map[int]plugin.PluginSet{2: {shared.PluginName: &shared.ExecutorPlugin{Impl: impl(2)}}})
	case strings.Contains(name, "v12"):
		serve(map[int]plugin.PluginSet{
			1: {shared.PluginName: &shared.ExecutorPlugin{Impl: impl(1)}},
			2: {shared.PluginName: &shared.ExecutorPlugin{Impl: impl(2)}},
		})
	default:
		shared.Serve(impl(shared.ProtocolVersion))
	}
}

func serve(sets map[int]plugin.PluginSet) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  shared.Handshake,
		VersionedPlugins: sets,
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}

type executor struct {
	name     string
	protocol int
	logger   hclog.Logger

	mu       sync.Mutex
	settings shared.Settings
}

func (e *executor) Describe(context.Context) (shared.Info, error) {
	return shared.Info{Name: e.name, Version: "0.0.1-test", Protocol: e.protocol, Capabilities: []string{"test"}}, nil
}

// Close is called by shared.Serve when the host stops the plugin.
func (e *executor) Close() error {
	e.logger.Info("executor closed")
	return nil
}

func (e *executor) Configure(_ context.Context, s shared.Settings) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.settings = s
	e.logger.Debug("configured", "ssh_config_path", s.SSHConfigPath)
	return nil
}

// PrepareDirectories does what the job id says:
//
//	exit      exits with status 2 mid-call
//	block     waits for the call's context to end and logs what it saw
//	spawn     starts a child process (in the plugin's process group) and
//	          returns its pid as the command
//	pid       returns the plugin's pid as the command
//	settings  returns the configured SSH config path as the command
//	log       logs one line at every level
//	not-found fails with shared.ErrNotFound
//
// ConfigureDevices refuses the job id devices-refused, dry run or not.
// Any other id returns a command naming the job dir.
func (e *executor) PrepareDirectories(ctx context.Context, req shared.PrepareRequest) (shared.PrepareResult, error) {
	switch req.Spec.Job.ID {
	case "exit":
		e.logger.Error("exiting mid-call on purpose")
		os.Exit(2)
	case "block":
		e.logger.Info("blocking until the context ends")
		<-ctx.Done()
		e.logger.Info("call ended by its context", "error", ctx.Err().Error())
		return shared.PrepareResult{}, fmt.Errorf("blocked call: %w", ctx.Err())
	case "spawn":
		self, err := os.Executable()
		if err != nil {
			return shared.PrepareResult{}, err
		}
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		if err := cmd.Start(); err != nil {
			return shared.PrepareResult{}, err
		}
		go func() { _ = cmd.Wait() }()
		return shared.PrepareResult{Command: strconv.Itoa(cmd.Process.Pid)}, nil
	case "pid":
		return shared.PrepareResult{Command: strconv.Itoa(os.Getpid())}, nil
	case "settings":
		e.mu.Lock()
		defer e.mu.Unlock()
		return shared.PrepareResult{Command: e.settings.SSHConfigPath}, nil
	case "log":
		e.logger.Trace("level probe", "level", "trace")
		e.logger.Debug("level probe", "level", "debug")
		e.logger.Info("level probe", "level", "info")
		e.logger.Warn("level probe", "level", "warn")
		e.logger.Error("level probe", "level", "error")
		return shared.PrepareResult{}, nil
	case "not-found":
		return shared.PrepareResult{}, shared.Errorf(shared.ErrNotFound, "job.id", "not-found", "job %s not found", shared.Show("not-found"))
	}
	return shared.PrepareResult{
		Command:     "mkdir -p " + req.Spec.Host.JobDir,
		Directories: []string{req.Spec.Host.JobDir},
		DryRun:      req.DryRun,
	}, nil
}

func (e *executor) ConfigureDevices(_ context.Context, req shared.DevicesRequest) (shared.DevicesResult, error) {
	if req.Spec.Job.ID == "devices-refused" {
		// Input only the plugin refuses (the host's own checks pass it).
		return shared.DevicesResult{}, shared.Errorf(shared.ErrInvalidInput, "job.id", req.Spec.Job.ID,
			"job %s: refused by the test plugin's ConfigureDevices (dry run %t)", shared.Show(req.Spec.Job.ID), req.DryRun)
	}
	if req.Spec.Job.WritableWorkspace {
		return shared.DevicesResult{}, shared.Errorf(shared.ErrInvalidInput, "job.writable_workspace", "true",
			"job %s: writable workspace is not supported", shared.Show(req.Spec.Job.ID))
	}
	devices := shared.Devices{"snapshot": {"type": "disk", "path": "/workspace/snapshot", "source": req.Spec.Remote.WorkDir}}
	return shared.DevicesResult{
		Instance: "pikaci-test",
		Project:  req.Spec.Remote.Incus.Project,
		Devices:  devices,
		Planned:  devices,
		Changed:  !req.DryRun,
		Warnings: []string{"test plugin: nothing was applied"},
		DryRun:   req.DryRun,
	}, nil
}
