package plugin

import (
	"context"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
)

// planBeside builds the job's device plan over remote while read (the
// Incus reads a phase needs, which do not depend on the plan) runs
// alongside it, and returns once both have ended: nothing is left running.
// The answer does not depend on which of the two ends first: a plan that
// fails (the job's input: a missing manifest, a mount out of its root)
// cancels the read and its error is the one returned; a read that fails
// lets the plan finish, so an input error still wins over the daemon's, and
// the read's error is returned only when the plan succeeded. ConfigureDevices
// and PrepareRuntime both use it.
func planBeside[T any](ctx context.Context, spec shared.JobSpec, remote devices.Remote, read func(context.Context) (T, error)) (T, devices.Plan, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	readc := make(chan result, 1)
	go func() {
		v, err := read(rctx)
		readc <- result{v, err}
	}()
	plan, err := devices.Build(ctx, spec, remote)
	if err != nil {
		cancel()
		<-readc
		var zero T
		return zero, plan, err
	}
	r := <-readc
	return r.v, plan, r.err
}
