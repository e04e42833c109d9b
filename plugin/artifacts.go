package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// CollectArtifacts implements shared.JobExecutor (SPEC v2): it copies
// artifacts.path from the job's instance into <host.job_dir>/artifacts, as
// one tar archive from one exec when the guest has tar, through the Incus
// file API otherwise (see package artifacts for the rules), all within
// artifacts.timeout_secs.
func (e *Executor) CollectArtifacts(ctx context.Context, req shared.CollectRequest) (shared.CollectResult, error) {
	spec := req.Job.JobSpec
	l, err := layout.Derive(spec)
	if err != nil {
		return shared.CollectResult{}, err
	}
	if err := req.Job.CheckArtifacts(); err != nil {
		return shared.CollectResult{}, err
	}
	a := req.Job.ArtifactsOrDefault()
	pool, err := e.sshPool()
	if err != nil {
		return shared.CollectResult{}, err
	}
	ep, err := e.endpoint(ctx, pool, spec.Remote)
	if err != nil {
		return shared.CollectResult{}, err
	}
	ctx, cancel := artifacts.WithTimeout(ctx, a.TimeoutSecs)
	defer cancel()
	// Collect from a running instance only: a stopped one has lost its
	// tmpfs (the default artifacts path is one in systemd images), and
	// reading it would report an empty success.
	inst, err := ep.client.Instance(ctx, spec.Remote.Incus.Project, l.Instance)
	if err != nil {
		return shared.CollectResult{}, fmt.Errorf("collect artifacts of job %s: %w", shared.Show(spec.Job.ID), err)
	}
	if err := e.ownInstance(ctx, ep.client, leaseKey(spec.Remote.Host, spec.Remote.Incus.ProjectOrDefault(), l.Instance), spec.Remote.Incus.ProjectOrDefault(), l.Instance); err != nil {
		return shared.CollectResult{}, fmt.Errorf("collect artifacts of job %s: %w", shared.Show(spec.Job.ID), err)
	}
	if inst.Status != "Running" {
		return shared.CollectResult{}, shared.Errorf(shared.ErrUnavailable, "instance", l.Instance,
			"collect artifacts of job %s: instance %s is %s, not running: what the job left in a tmpfs is gone, and the collection cannot run",
			shared.Show(spec.Job.ID), shared.Show(l.Instance), shared.Show(inst.Status))
	}
	g := guest{client: ep.client, project: spec.Remote.Incus.Project, instance: l.Instance}
	dest := shared.ArtifactsDirOf(spec.Host.JobDir)
	lim := artifacts.Limits{MaxBytes: a.MaxBytes, MaxFiles: a.MaxFiles}
	res, err := g.collectTar(ctx, a.Path, dest, lim)
	if errors.Is(err, errNoTar) {
		res, err = g.collectFiles(ctx, a.Path, dest, lim)
	}
	if err != nil {
		return res, fmt.Errorf("collect artifacts of job %s from %s: %w", shared.Show(spec.Job.ID), l.Instance, err)
	}
	return res, nil
}

// guest is the job's instance.
type guest struct {
	client            *incus.Client
	project, instance string
}

// errNoTar: the guest has no tar (or no sh); collect through the file API.
var errNoTar = errors.New("the guest has no tar")

// The exit codes of tarScript that are not tar's.
const (
	tarMissing    = 120 // no artifacts dir: an empty result
	tarSymlink    = 121 // the artifacts path is a symlink: not followed
	tarNotDir     = 122 // the artifacts path is not a directory
	tarNoTar      = 127 // no tar (or no sh): the file API instead
	tarAfterBytes = 1 << 20
	tarExitWait   = 10 * time.Second
)

// tarScript writes the guest directory $1 as one tar archive on stdout,
// names relative to it ($1 is absolute: never taken for an option). It
// never follows $1 when it is a symlink; tar itself follows none below it
// and stores FIFOs and devices as headers, never reading them. tar is run by its path, found in PATH: a shell
// such as busybox's would otherwise run its own applet whatever the
// guest's tar is.
const tarScript = `[ -L "$1" ] && exit 121
[ -e "$1" ] || exit 120
[ -d "$1" ] || exit 122
cd "$1" || exit 122
set -f
IFS=:
for d in $PATH; do
	case $d in /*) ;; *) continue ;; esac
	[ -f "$d/tar" ] && [ -x "$d/tar" ] && exec "$d/tar" -cf - .
done
exit 127`

// collectTar collects dir with one exec of tar, read as the hostile
// stream it is by artifacts.CollectTar. It returns errNoTar, having written
// nothing, when the guest has no tar.
func (g guest) collectTar(ctx context.Context, dir, dest string, lim artifacts.Limits) (shared.CollectResult, error) {
	pr, pw := io.Pipe()
	var errOut boundedBuffer
	errOut.max = 4 << 10
	// A stream that stalls ends with the collection's bound.
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(context.Cause(ctx)) })
	defer stop()
	proc, err := g.client.StartExec(ctx, g.project, g.instance, incus.ExecRequest{
		Command: []string{"sh", "-c", tarScript, "sh", dir},
		Stdout:  pw, Stderr: &errOut,
	})
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("collect artifacts: %w", context.Cause(ctx))
		}
		return shared.CollectResult{Dir: dest}, err
	}
	defer proc.Close() // kills a tar still running
	go func() {
		<-proc.OutputDone()
		pw.Close()
	}()
	// Nothing is written before the stream's first byte: a guest without
	// tar leaves no trace here.
	first := make([]byte, 1)
	n, rerr := io.ReadFull(pr, first)
	if n == 0 {
		pr.Close()
		code, werr := g.waitTar(ctx, proc)
		switch {
		case ctx.Err() != nil:
			return shared.CollectResult{Dir: dest}, fmt.Errorf("collect artifacts: %w", context.Cause(ctx))
		case werr != nil:
			return shared.CollectResult{Dir: dest}, fmt.Errorf("collect artifacts: archive %s in the guest: %w", shared.Show(dir), werr)
		case code == tarNoTar || code == 126:
			return shared.CollectResult{Dir: dest}, errNoTar
		case code == tarMissing:
			return shared.CollectResult{Dir: dest}, nil
		case code == tarSymlink:
			return shared.CollectResult{Dir: dest, Warnings: []string{fmt.Sprintf("skipped %s: the artifacts directory is a symlink, not followed", shared.Show(dir))}}, nil
		case code == tarNotDir:
			return shared.CollectResult{Dir: dest, Warnings: []string{fmt.Sprintf("skipped %s: the artifacts path is not a directory", shared.Show(dir))}}, nil
		}
		// No archive and no reason: the collection cannot run, a
		// system failure, never an empty success.
		return shared.CollectResult{Dir: dest}, shared.Errorf(shared.ErrUnavailable, "artifacts.path", dir,
			"collect artifacts: archive %s in the guest: exit %d with no archive (%v): %s",
			shared.Show(dir), code, rerr, shared.Show(strings.TrimSpace(errOut.String())))
	}
	stream := struct {
		io.Reader
		io.Closer
	}{io.MultiReader(strings.NewReader(string(first)), pr), pr}
	res, err := artifacts.CollectTar(ctx, stream, dir, dest, lim)
	if err != nil {
		pr.CloseWithError(err)
		return res, err
	}
	// The archive ended: tar pads it to its record size, then exits. More
	// than that is not read.
	after, _ := io.CopyN(io.Discard, pr, tarAfterBytes)
	pr.Close()
	if after >= tarAfterBytes {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the guest's archive of %s went on past its end; the rest was not read", shared.Show(dir)))
		return res, nil
	}
	code, werr := g.waitTar(ctx, proc)
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("collect artifacts: %w", context.Cause(ctx))
	case werr != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf("the guest's tar of %s did not say how it ended: %v", shared.Show(dir), werr))
	case code != 0:
		res.Warnings = append(res.Warnings, fmt.Sprintf("the guest's tar of %s exited %d: %s", shared.Show(dir), code, shared.Show(strings.TrimSpace(errOut.String()))))
	}
	return res, nil
}

// waitTar waits a little for the tar exec to end once its output did.
func (g guest) waitTar(ctx context.Context, proc *incus.Process) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, tarExitWait)
	defer cancel()
	return proc.Wait(wctx)
}

// artifactFileTimeout bounds each file API read of a collection; 0:
// artifacts.FileTimeout. A variable for tests.
var artifactFileTimeout time.Duration

// collectFiles collects dir through the file API, the special files
// listed first with one exec: the file API must never be asked for a FIFO.
func (g guest) collectFiles(ctx context.Context, dir, dest string, lim artifacts.Limits) (shared.CollectResult, error) {
	special, warnings, err := listSpecial(ctx, g.client, g.project, g.instance, dir)
	if err != nil {
		return shared.CollectResult{Dir: dest}, err
	}
	src := incusFiles{client: g.client, project: g.project, instance: g.instance, special: special}
	res, err := artifacts.Collect(ctx, src, dir, dest, lim, artifacts.Options{FileTimeout: artifactFileTimeout})
	res.Warnings = append(warnings, res.Warnings...)
	return res, err
}
