package host

import (
	"context"
	"fmt"

	"github.com/pikaci/vmexec/shared"
)

// A loaded plugin is a shared.JobExecutor. When it negotiated protocol 1,
// every version 2 call fails with a *ProtocolError and nothing is sent.
var _ shared.JobExecutor = (*Plugin)(nil)

// ProtocolError refuses a version 2 call to a plugin that speaks an older
// protocol. It wraps shared.ErrInvalidInput: the same call to the same
// plugin cannot succeed.
type ProtocolError struct {
	Plugin   string // its name
	Protocol int    // the protocol it negotiated
	Call     string // e.g. RunJob
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("plugin %s speaks protocol %d: %s needs protocol %d",
		e.Plugin, e.Protocol, e.Call, shared.ProtocolWholeJob)
}

// Unwrap makes the error a shared.ErrInvalidInput.
func (e *ProtocolError) Unwrap() error { return shared.ErrInvalidInput }

// Protocol is the protocol version the plugin negotiated when it last
// started: 1 (two calls) or 2 (the whole job).
func (p *Plugin) Protocol() int { return p.Info().Protocol }

// StageWorkspaceSnapshot implements shared.JobExecutor.
func (p *Plugin) StageWorkspaceSnapshot(ctx context.Context, req shared.StageRequest) (shared.StageResult, error) {
	return callJob(ctx, p, "StageWorkspaceSnapshot", func(e shared.JobExecutor) (shared.StageResult, error) {
		return e.StageWorkspaceSnapshot(ctx, req)
	})
}

// PrepareRuntime implements shared.JobExecutor.
func (p *Plugin) PrepareRuntime(ctx context.Context, req shared.RuntimeRequest) (shared.RuntimeResult, error) {
	return callJob(ctx, p, "PrepareRuntime", func(e shared.JobExecutor) (shared.RuntimeResult, error) {
		return e.PrepareRuntime(ctx, req)
	})
}

// RunJob implements shared.JobExecutor. Cancelling ctx cancels the call in
// the plugin, which stops the job before it answers.
func (p *Plugin) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	return callJob(ctx, p, "RunJob", func(e shared.JobExecutor) (shared.RunResult, error) {
		return e.RunJob(ctx, req, out)
	})
}

// CollectArtifacts implements shared.JobExecutor.
func (p *Plugin) CollectArtifacts(ctx context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	return callJob(ctx, p, "CollectArtifacts", func(e shared.JobExecutor) (shared.CollectResult, error) {
		return e.CollectArtifacts(ctx, req)
	})
}

// Cleanup implements shared.JobExecutor.
func (p *Plugin) Cleanup(ctx context.Context, req shared.CleanupRequest) (shared.CleanupResult, error) {
	return callJob(ctx, p, "Cleanup", func(e shared.JobExecutor) (shared.CleanupResult, error) {
		return e.Cleanup(ctx, req)
	})
}

// Sweep implements shared.JobExecutor.
func (p *Plugin) Sweep(ctx context.Context, req shared.SweepRequest) (shared.SweepResult, error) {
	return callJob(ctx, p, "Sweep", func(e shared.JobExecutor) (shared.SweepResult, error) {
		return e.Sweep(ctx, req)
	})
}

// Preflight implements shared.Preflighter: shared.ErrNoPreflight when the
// plugin has none.
func (p *Plugin) Preflight(ctx context.Context, req shared.PreflightRequest) (shared.PreflightResult, error) {
	return callJob(ctx, p, "Preflight", func(e shared.JobExecutor) (shared.PreflightResult, error) {
		pf, ok := e.(shared.Preflighter)
		if !ok {
			return shared.PreflightResult{}, shared.ErrNoPreflight
		}
		return pf.Preflight(ctx, req)
	})
}

// callJob is call for a version 2 method: the running process must have
// negotiated protocol 2 (a restarted process negotiates again).
func callJob[T any](ctx context.Context, p *Plugin, method string, f func(shared.JobExecutor) (T, error)) (T, error) {
	return call(ctx, p, method, func(e shared.Executor) (T, error) {
		je, ok := e.(shared.JobExecutor)
		if !ok {
			var zero T
			return zero, &ProtocolError{Plugin: p.name, Protocol: p.Protocol(), Call: method}
		}
		return f(je)
	})
}
