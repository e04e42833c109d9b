package plugin

// RunJob (contract version 2): the job's command in its instance, its
// output as it arrives, the exit code; and stopping it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// terminateBound bounds what RunJob does after a timeout or a cancellation
// beyond the signals' own delays: the force stop and the last wait.
var terminateBound = 2 * time.Minute

// RunJob runs the job's command in its instance (contract v2,
// docs/contract.md): stdin closed, stdout and stderr forwarded to out as they
// arrive, the exit code as the result. On command.timeout_secs, a cancellation
// or a failing sink the job is stopped (see stopper.stop: SIGTERM, SIGKILL
// shared.KillGrace later, and when the output is still open
// shared.ForceStopGrace after that, every other process of the guest
// ended: incusJob.ForceStop). Once the job has ended, whatever of it is
// left (children that let go of the output too) is ended the same way: no
// process of the job survives the call, and the instance keeps running for
// the collection.
func (e *Executor) RunJob(ctx context.Context, req shared.RunRequest, out shared.OutputSink) (shared.RunResult, error) {
	spec := req.Job.JobSpec
	if err := req.Job.CheckCommand(); err != nil {
		return shared.RunResult{}, err
	}
	cmd := req.Job.Command.WithDefaults()
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.RunResult{}, err
	}
	_, ep, err := e.wholeJobEndpoint(ctx, spec.Remote)
	if err != nil {
		return shared.RunResult{}, err
	}
	project, c := spec.Remote.Incus.ProjectOrDefault(), ep.client
	if spec.Remote.IsCluster() && spec.Remote.Member == "" {
		return shared.RunResult{}, errNotPlaced("RunJob")
	}
	fail := func(err error) (shared.RunResult, error) {
		return shared.RunResult{}, fmt.Errorf("run job %s in instance %s: %w", shared.Show(l.JobID), shared.Show(l.Instance), err)
	}
	if err := e.ownInstance(ctx, c, leaseKey(spec.Remote.Host, project, l.Instance), project, l.Instance); err != nil {
		return fail(err)
	}

	// The job's clock starts before the checks: their file reads are
	// bounded (guestFileTimeout each) and count against timeout_secs.
	var timeout <-chan time.Time
	if cmd.TimeoutSecs > 0 {
		t := time.NewTimer(time.Duration(cmd.TimeoutSecs) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	env, group, err := guestChecks(ctx, c, project, l.Instance, cmd)
	if err != nil {
		return fail(err)
	}

	sink := &chunkSink{out: out, failed: make(chan struct{})}
	p, err := c.StartExec(ctx, project, l.Instance, incus.ExecRequest{
		Command: cmd.Argv, Env: env, Cwd: cmd.Cwd, User: cmd.User, Group: group,
		Stdout: &streamWriter{sink: sink, stream: shared.Stdout},
		Stderr: &streamWriter{sink: sink, stream: shared.Stderr},
	})
	if err != nil {
		return fail(err)
	}
	defer p.Close()
	job := incusJob{Process: p, c: c, project: project, name: l.Instance, log: e.log, ended: &endResult{}}
	stop := e.stopper()
	job.settle = stop.forceStopGrace

	res := shared.RunResult{TimeoutSecs: cmd.TimeoutSecs}
	// bg outlives ctx: signals, the force stop and the last wait must still
	// go out after the host cancelled the call. Its clock starts when the
	// job ends or must be stopped, not now: a job may run for hours.
	var bg context.Context
	cancelBG := context.CancelFunc(func() {})
	defer func() { cancelBG() }()
	stopCtx := func() context.Context {
		if bg == nil {
			bg, cancelBG = context.WithTimeout(context.WithoutCancel(ctx), stop.killGrace+stop.forceStopGrace+terminateBound)
		}
		return bg
	}
	// On a cluster the member is watched: a member that dies leaves the
	// forwarded exec open for ever, and its exit code is lost.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	lost := watchMember(wctx, c, spec.Remote)
	mainExited := p.MainExited()
	var grace <-chan time.Time // runs once the main process is gone
	var stopErr error
	for ended := false; !ended; {
		ended = true
		select {
		case <-p.Done():
		case <-timeout:
			res.TimedOut = true
			stop.stop(stopCtx(), job)
		case <-ctx.Done():
			stop.stop(stopCtx(), job)
			stopErr = fmt.Errorf("cancelled; the job was sent SIGTERM, then SIGKILL: %w", ctx.Err())
		case <-sink.failed:
			stop.stop(stopCtx(), job)
			stopErr = fmt.Errorf("the output could not be delivered; the job was stopped: %w", sink.err)
		case <-mainExited:
			// The main process is gone; children holding its output
			// would keep the exec open for as long as they live.
			mainExited = nil
			t := time.NewTimer(stop.forceStopGrace)
			defer t.Stop()
			grace = t.C
			ended = false
		case <-grace:
			stop.forceStop(stopCtx(), job)
		case err := <-lost:
			// Nothing can stop the job there; do not wait for an
			// exit code that will never come.
			return fail(err)
		}
	}
	code, err := p.Wait(stopCtx())
	// No process of the job survives the call, not even one that let go
	// of the output (setsid … </dev/null >/dev/null &).
	endErr := job.endProcesses(stopCtx())
	if stopErr != nil {
		return fail(errors.Join(stopErr, endErr))
	}
	if err != nil && spec.Remote.IsCluster() && errors.Is(err, shared.ErrUnavailable) {
		// The /wait forwarded to a member that died fails with a 500
		// (EOF, connection timed out, missing event connection).
		return fail(memberLost(spec.Remote.Member, "the wait for the job failed", err))
	}
	if err != nil {
		return fail(errors.Join(err, endErr))
	}
	if endErr != nil {
		return fail(shared.Errorf(shared.ErrUnavailable, "instance", l.Instance, "%w", endErr))
	}
	res.ExitCode = code
	return res, nil
}

// chunkSink serialises the two streams' chunks into the job's sink.
type chunkSink struct {
	mu     sync.Mutex
	out    shared.OutputSink
	err    error
	failed chan struct{} // closed on the sink's first error
}

func (s *chunkSink) send(stream shared.Stream, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.out == nil {
		return nil
	}
	if err := s.out(shared.OutputChunk{Stream: stream, Data: slices.Clone(p)}); err != nil {
		s.err = err
		close(s.failed)
		return err
	}
	return nil
}

type streamWriter struct {
	sink   *chunkSink
	stream shared.Stream
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if err := w.sink.send(w.stream, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// maxSymlinkHops bounds following a cwd that is a symlink.
const maxSymlinkHops = 8

// guestFileTimeout bounds each of RunJob's checks that read the guest
// through the file API (the cwd's, /etc/passwd's): a FIFO there never
// answers. A variable for tests.
var guestFileTimeout = artifacts.FileTimeout

// guestReadTimeout is the error of a guest read that did not answer within
// guestFileTimeout, nil for any other failure. Before it returns it ends
// the read in the server (unblockRead): on LXD 5.0 a file API read of a
// FIFO given up on goes on there, and the instance's force stop (Cleanup)
// fails with "operation timed out" until it ends.
func guestReadTimeout(ctx, fctx context.Context, c *incus.Client, project, name, field, value, path string, err error) error {
	if ctx.Err() != nil || !errors.Is(fctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	unblockRead(ctx, c, project, name, path)
	return shared.Errorf(shared.ErrUnavailable, field, value,
		"%s did not answer within %s in the guest (a FIFO?): %w", shared.Show(path), guestFileTimeout, err)
}

// guestChecks runs RunJob's reads of the guest before the job at once:
// the cwd check and the user lookup (for a uid but 0) are independent, so
// they cost one round trip, not two. The cwd's error comes first.
func guestChecks(ctx context.Context, c *incus.Client, project, name string, cmd shared.Command) (map[string]string, int, error) {
	var (
		env   map[string]string
		group int
		uerr  error
		wg    sync.WaitGroup
	)
	wg.Go(func() { env, group, uerr = userEnv(ctx, c, project, name, cmd) })
	cerr := checkCwd(ctx, c, project, name, cmd.Cwd)
	wg.Wait()
	if cerr != nil {
		return nil, 0, cerr
	}
	return env, group, uerr
}

// checkCwd refuses a working directory that is not a directory in the
// guest: Incus would silently run the command in / instead. Its reads are
// bounded by guestFileTimeout together.
func checkCwd(ctx context.Context, c *incus.Client, project, name, cwd string) error {
	fctx, cancel := context.WithTimeout(ctx, guestFileTimeout)
	defer cancel()
	p := cwd
	for range maxSymlinkHops {
		f, err := c.GetFile(fctx, project, name, p)
		if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.cwd", cwd, p, err); terr != nil {
			return fmt.Errorf("check command.cwd %s: %w", shared.Show(cwd), terr)
		}
		if errors.Is(err, shared.ErrNotFound) {
			return shared.Errorf(shared.ErrNotFound, "command.cwd", cwd, "command.cwd %s does not exist in the guest: %w", shared.Show(cwd), err)
		}
		if err != nil {
			return fmt.Errorf("check command.cwd %s: %w", shared.Show(cwd), err)
		}
		if f.Body != nil {
			f.Body.Close()
		}
		switch f.Type {
		case incus.FileTypeDirectory:
			return nil
		case incus.FileTypeSymlink:
			p = f.Target
			continue
		}
		return shared.Errorf(shared.ErrInvalidInput, "command.cwd", cwd, "command.cwd %s is a %s in the guest, not a directory", shared.Show(cwd), f.Type)
	}
	return shared.Errorf(shared.ErrInvalidInput, "command.cwd", cwd, "command.cwd %s: more than %d symlinks", shared.Show(cwd), maxSymlinkHops)
}

// maxPasswd bounds the guest's /etc/passwd read.
const maxPasswd = 4 << 20

const passwdPath = "/etc/passwd"

// userEnv returns the job's environment and gid. Incus sets HOME and USER
// only for uid 0; for another uid they come from the guest's /etc/passwd
// (as login would set them), unless command.env sets them, and the gid is
// the user's primary group. A uid without a passwd entry runs with gid =
// uid and without HOME or USER: nothing would be true to put there. The
// read is bounded by guestFileTimeout.
func userEnv(ctx context.Context, c *incus.Client, project, name string, cmd shared.Command) (map[string]string, int, error) {
	env := maps.Clone(cmd.Env)
	if env == nil {
		env = map[string]string{}
	}
	if cmd.User == 0 {
		return env, 0, nil
	}
	fctx, cancel := context.WithTimeout(ctx, guestFileTimeout)
	defer cancel()
	f, err := c.GetFile(fctx, project, name, passwdPath)
	if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.user", strconv.Itoa(cmd.User), passwdPath, err); terr != nil {
		return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, terr)
	}
	if errors.Is(err, shared.ErrNotFound) {
		return env, cmd.User, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, err)
	}
	if f.Body == nil {
		return env, cmd.User, nil
	}
	defer f.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(f.Body, maxPasswd))
	uid := strconv.Itoa(cmd.User)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 7 || fields[2] != uid {
			continue
		}
		gid, err := strconv.Atoi(fields[3])
		if err != nil {
			gid = cmd.User
		}
		if _, ok := env["HOME"]; !ok && fields[5] != "" {
			env["HOME"] = fields[5]
		}
		if _, ok := env["USER"]; !ok && fields[0] != "" {
			env["USER"] = fields[0]
		}
		return env, gid, nil
	}
	if err := sc.Err(); err != nil {
		if terr := guestReadTimeout(ctx, fctx, c, project, name, "command.user", strconv.Itoa(cmd.User), passwdPath, err); terr != nil {
			return nil, 0, fmt.Errorf("look up uid %d in the guest: %w", cmd.User, terr)
		}
		return nil, 0, fmt.Errorf("look up uid %d in the guest's /etc/passwd: %w", cmd.User, err)
	}
	return env, cmd.User, nil
}
