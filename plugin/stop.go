package plugin

// Stopping a running job: the SIGTERM → SIGKILL → force-stop sequence
// behind a small interface (gitlab-runner's process.Killer is the model),
// so that tests drive it with a fake in milliseconds.

import (
	"context"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// jobProcess is a running job as its stop sequence sees it.
type jobProcess interface {
	// Done is closed once the exec has ended: its output closed and its
	// exit code known.
	Done() <-chan struct{}
	// MainExited is closed once the job's main process has exited;
	// children may still hold its output open.
	MainExited() <-chan struct{}
	// Terminate asks the main process to end (SIGTERM); ForceKill ends it
	// (SIGKILL).
	Terminate(ctx context.Context) error
	ForceKill(ctx context.Context) error
	// ForceStop ends every process that holds the job's output, whoever
	// signals can no longer reach.
	ForceStop(ctx context.Context) error
}

// stopper runs the stop sequence with its grace times.
type stopper struct {
	// killGrace is the time between SIGTERM and SIGKILL.
	killGrace time.Duration
	// forceStopGrace is the time the output may stay open after SIGKILL,
	// or after the main process exited by itself, before ForceStop.
	forceStopGrace time.Duration
}

// contractStopper has the contract's grace times.
var contractStopper = stopper{killGrace: shared.KillGrace, forceStopGrace: shared.ForceStopGrace}

// stop sends SIGTERM, SIGKILL killGrace later, and force-stops when the
// output is still open forceStopGrace after that. When the main process is
// already gone (children hold the output) no signal can reach anyone: the
// force stop follows forceStopGrace later. ctx bounds it all.
func (s stopper) stop(ctx context.Context, p jobProcess) {
	select {
	case <-p.MainExited():
	default:
		_ = p.Terminate(ctx)
		if waitDone(ctx, p, s.killGrace) {
			return
		}
		_ = p.ForceKill(ctx)
	}
	if waitDone(ctx, p, s.forceStopGrace) {
		return
	}
	s.forceStop(ctx, p)
}

// forceStop force-stops and waits, within ctx, for the exec to end.
func (s stopper) forceStop(ctx context.Context, p jobProcess) {
	_ = p.ForceStop(ctx)
	select {
	case <-p.Done():
	case <-ctx.Done():
	}
}

// waitDone reports whether the exec ended within d.
func waitDone(ctx context.Context, p jobProcess, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// incusJob is a job's exec in its Incus instance: signals go to the exec's
// main process, the force stop stops the instance (which ends every
// process of the job, and with them the exec).
type incusJob struct {
	*incus.Process
	c             *incus.Client
	project, name string
}

var _ jobProcess = incusJob{}

func (j incusJob) Terminate(ctx context.Context) error {
	return j.Signal(ctx, int(syscall.SIGTERM))
}

func (j incusJob) ForceKill(ctx context.Context) error {
	return j.Signal(ctx, int(syscall.SIGKILL))
}

func (j incusJob) ForceStop(ctx context.Context) error {
	return j.c.ForceStop(ctx, j.project, j.name)
}
