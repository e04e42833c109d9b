package plugin

import (
	"context"
	"sync"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
)

// planBeside builds the job's device plan over remote while read (the
// Incus reads a phase needs, which do not depend on the plan) runs
// alongside it, and returns once both have ended: nothing is left running.
// The first of the two to fail cancels the other, and its error is the one
// returned (not the cancellation it caused in the other). ConfigureDevices
// and PrepareRuntime both use it.
func planBeside[T any](ctx context.Context, spec shared.JobSpec, remote devices.Remote, read func(context.Context) (T, error)) (T, devices.Plan, error) {
	return planBesideWith(ctx, spec, devices.Build, remote, read)
}

// planBesideWith is planBeside with the plan built by build
// (devices.Build, or devices.BuildAhead for a dry run of a new run).
func planBesideWith[T any](ctx context.Context, spec shared.JobSpec, build func(context.Context, shared.JobSpec, devices.Remote) (devices.Plan, error),
	remote devices.Remote, read func(context.Context) (T, error)) (T, devices.Plan, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
	)
	fail := func(err error) {
		once.Do(func() {
			firstErr = err
			cancel()
		})
	}
	type result struct {
		v   T
		err error
	}
	readc := make(chan result, 1)
	go func() {
		v, err := read(ctx)
		if err != nil {
			fail(err)
		}
		readc <- result{v, err}
	}()
	plan, err := build(ctx, spec, remote)
	if err != nil {
		fail(err)
	}
	r := <-readc
	return r.v, plan, firstErr
}
