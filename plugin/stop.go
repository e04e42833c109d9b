package plugin

// Stopping a running job: the SIGTERM → SIGKILL → force-stop sequence
// behind a small interface (gitlab-runner's process.Killer is the model),
// so that tests drive it with a fake in milliseconds.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
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
// main process; ForceStop ends every other process of the guest with one
// root exec (endJobProcesses), and force-stops the instance only when that
// exec cannot do it, since stopping the instance loses what the job left in
// a tmpfs (its artifacts, often).
type incusJob struct {
	*incus.Process
	c             *incus.Client
	project, name string
	// ended records that ForceStop ran, so RunJob does not end the
	// processes twice; err is its outcome.
	ended *endResult
}

type endResult struct {
	done bool
	err  error
}

var _ jobProcess = incusJob{}

func (j incusJob) Terminate(ctx context.Context) error {
	return j.Signal(ctx, int(syscall.SIGTERM))
}

func (j incusJob) ForceKill(ctx context.Context) error {
	return j.Signal(ctx, int(syscall.SIGKILL))
}

// ForceStop ends every process of the job (see endProcesses).
func (j incusJob) ForceStop(ctx context.Context) error {
	return j.endProcesses(ctx)
}

// endProcesses ends every process of the job, once: see
// endJobProcesses, and when it fails, a force stop of the instance. The
// error says that a process of the job may still run.
func (j incusJob) endProcesses(ctx context.Context) error {
	if j.ended.done {
		return j.ended.err
	}
	j.ended.done = true
	err := endJobProcesses(ctx, j.c, j.project, j.name)
	if err == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, endProcessesTimeout)
	defer cancel()
	if serr := j.c.ForceStop(sctx, j.project, j.name); serr != nil {
		j.ended.err = fmt.Errorf("end the job's processes: %w; then force-stop the instance: %w", err, serr)
		return j.ended.err
	}
	return nil
}

// endProcessesTimeout bounds the exec that ends the job's processes, and
// the force stop after it when it fails.
const endProcessesTimeout = 30 * time.Second

// endProcessesRounds bounds the rounds of endProcessesScript, 0.1 s
// apart: a job that forks faster than it is killed is force-stopped
// instead.
const endProcessesRounds = 50

// endProcessesScript SIGKILLs every process of the guest but init, itself
// and the instance's agent (a VM's incus-agent or lxd-agent, which serves
// the exec and file APIs), round after round until none is left. Kernel
// threads and zombies have no resolvable /proc/PID/exe and are passed
// over. Only shell builtins run, but for a short sleep between rounds when
// a process was left. Its last line is
// "ended <$1 + 1>", which only a shell that ran it can print.
const endProcessesScript = `me=$$; round=0
while :; do
	left=0
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[ "$p" = 1 ] || [ "$p" = "$me" ] && continue
		[ -e "$d/exe" ] || continue
		comm=; read -r comm <"$d/comm" 2>/dev/null || continue
		case $comm in incus-agent|lxd-agent) continue ;; esac
		kill -9 "$p" 2>/dev/null && left=$((left + 1))
	done
	[ "$left" = 0 ] && break
	round=$((round + 1))
	[ "$round" -lt "$2" ] || exit 3
	sleep 0.1 2>/dev/null || :
done
echo "ended $(($1 + 1))"`

// endJobProcesses ends every process of the job but the instance's init
// with one exec as root (endProcessesScript), bounded by
// endProcessesTimeout. It fails when the guest cannot run it (no sh, a
// replaced one) or processes outlive its rounds.
func endJobProcesses(ctx context.Context, c *incus.Client, project, name string) error {
	ctx, cancel := context.WithTimeout(ctx, endProcessesTimeout)
	defer cancel()
	nonce := rand.Int32N(1 << 30)
	var out, errOut limitedBuffer
	code, err := c.Exec(ctx, project, name, incus.ExecRequest{
		Command: []string{"sh", "-c", endProcessesScript, "sh", strconv.Itoa(int(nonce)), strconv.Itoa(endProcessesRounds)},
		Stdout:  &out, Stderr: &errOut,
	})
	switch {
	case err != nil:
		return fmt.Errorf("instance %s: the exec ending the job's processes: %w", shared.Show(name), err)
	case code != 0 || strings.TrimSpace(out.String()) != "ended "+strconv.Itoa(int(nonce)+1):
		return fmt.Errorf("instance %s: the exec ending the job's processes exited %d (want 0 and its marker), output %s %s",
			shared.Show(name), code, shared.Show(out.String()), shared.Show(errOut.String()))
	}
	return nil
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
