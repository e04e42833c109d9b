package plugin_test

// Issue 17 against the real sshd and the real LXD: a hostile job and a
// flaky daemon (points 1, 2, 3, 4 and 10).

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

func (w *wholeEnv) status(t *testing.T, instance string) string {
	t.Helper()
	inst, err := w.lxd.Instance(t.Context(), wholeJobProject, instance)
	if err != nil {
		t.Fatalf("read instance %s: %v", instance, err)
	}
	return inst.Status
}

// Issue 17.3: a child that let go of its stdio (setsid … </dev/null
// >/dev/null 2>&1 &) does not hold the exec open; it must not outlive
// RunJob all the same.
func TestRunJobLeavesNoProcessThatLetGoOfTheOutput(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `setsid sleep 1703 </dev/null >/dev/null 2>&1 & echo started`)
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, newChunks().sink)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("RunJob = %+v, %v; want exit 0", res, err)
	}
	w.noJobProcess(t, l.Instance, "sleep 1703")
	if got := w.status(t, l.Instance); got != "Running" {
		t.Errorf("instance %s after RunJob: %s, want Running", l.Instance, got)
	}
}

// Issue 17.2: a passing job that leaves a background child holding its
// output (`server &`) keeps its artifacts, even in a tmpfs: the child is
// ended, the instance is not stopped, and the collection finds the file.
func TestRunJobEndsAChildHoldingTheOutputWithoutLosingTheArtifacts(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `mkdir -p /out && mount -t tmpfs tmpfs /out && echo result > /out/r.txt && { sleep 1702 & } && echo started`)
	l := w.prepareWithArtifacts(t, &job, "/out")
	c := newChunks()
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, c.sink)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("RunJob = %+v, %v (stderr %q); want exit 0", res, err, c.text(shared.Stderr))
	}
	w.noJobProcess(t, l.Instance, "sleep 1702")
	if got := w.status(t, l.Instance); got != "Running" {
		t.Errorf("instance %s after RunJob: %s, want Running (stopping it loses the tmpfs)", l.Instance, got)
	}
	got, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if err != nil || got.Files != 1 {
		t.Errorf("CollectArtifacts = %+v, %v; want the job's one file", got, err)
	}
}

// Issue 17.2: a collection that cannot run is a system failure, never an
// empty success: from a stopped instance (its tmpfs gone).
func TestCollectArtifactsFromAStoppedInstanceIsASystemFailure(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l, _ := layout.Derive(job.JobSpec)
	t.Cleanup(func() { os.RemoveAll(job.Host.JobDir) })
	w.prepare(t, job)
	if err := w.lxd.ForceStop(t.Context(), wholeJobProject, l.Instance); err != nil {
		t.Fatal(err)
	}
	res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("CollectArtifacts = %+v, %v; want ErrUnavailable saying the instance is not running", res, err)
	}
}

// Issue 17.1: a job that plants a FIFO in the artifacts dir and replaces
// /bin/sh (so no listing of special files can run) cannot keep its
// instance alive: the collection refuses to read anything (a system
// failure), and Cleanup deletes the instance within its bound.
func TestJobThatReplacesShAndPlantsAFIFOCannotKeepItsInstanceAlive(t *testing.T) {
	w := newWholeEnv(t)
	// The new sh runs `busybox true`: it exits 0 and prints nothing.
	job := w.job(t, "sh", "-c", `mkdir -p /out && mkfifo /out/pipe && echo x > /out/a && printf '#!/bin/busybox true\n' > /bin/sh.new && chmod 755 /bin/sh.new && mv /bin/sh.new /bin/sh`)
	l := w.prepareWithArtifacts(t, &job, "/out")
	if res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, newChunks().sink); err != nil || res.ExitCode != 0 {
		t.Fatalf("RunJob = %+v, %v; want exit 0", res, err)
	}
	cres, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("CollectArtifacts = %+v, %v; want ErrUnavailable (nothing read)", cres, err)
	}
	w.cleanupDeletes(t, job, l.Instance)
}

// Issue 17.10: Cleanup right after a PrepareRuntime cancelled while the
// instance is being created waits for the create operation in flight and
// deletes the instance ("Instance is busy running a "create" operation"
// once made it give up).
func TestCleanupWaitsForTheCreateInFlight(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l, _ := layout.Derive(job.JobSpec)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	prepared := make(chan error, 1)
	go func() {
		_, err := w.e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job})
		prepared <- err
	}()
	// Cancel as soon as the instance exists: its create (or start) is in
	// flight.
	for {
		if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); err == nil {
			break
		}
		select {
		case err := <-prepared:
			t.Fatalf("PrepareRuntime ended (%v) before the instance was seen", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	cctx, ccancel := context.WithTimeout(t.Context(), shared.CleanupTimeout)
	defer ccancel()
	res, err := w.e.Cleanup(cctx, shared.CleanupRequest{Job: job})
	<-prepared
	if err != nil || !res.Deleted {
		t.Errorf("Cleanup = %+v, %v; want the instance deleted", res, err)
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("instance left after Cleanup: %v", err)
	}
}

// Issue 17.4: LXD stopped (SIGSTOP) right after the create: PrepareRuntime
// ends within the bound of one Incus request, with an error naming it, long
// before ready_timeout_secs or the caller's deadline.
func TestPrepareRuntimeWithTheDaemonStoppedAfterTheCreateIsBounded(t *testing.T) {
	sshdtest.Require(t)
	d := lxdtest.Start(t) // a daemon of its own: it is frozen
	d.BusyboxImage(t)
	d.CreateProject(t, wholeJobProject)
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	plugin.SetIncusRequestTimeout(e, 3*time.Second)
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: srv.WriteClientConfig(t, "vm-host")}); err != nil {
		t.Fatal(err)
	}
	lxd := incus.NewUnix(d.Socket)
	t.Cleanup(lxd.Close)
	w := &wholeEnv{d: d, srv: srv, e: e, lxd: lxd, work: t.TempDir() + "/ci work"}
	job := w.job(t, "true")
	job.Runtime.ReadyTimeoutSecs = 600
	l, _ := layout.Derive(job.JobSpec)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	prepared := make(chan error, 1)
	go func() {
		_, err := e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job})
		prepared <- err
	}()
	pid := lxdPID(t, d)
	for {
		if _, err := lxd.Instance(t.Context(), wholeJobProject, l.Instance); err == nil {
			break
		}
		select {
		case err := <-prepared:
			t.Fatalf("PrepareRuntime ended (%v) before the instance was seen", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Registered after w.job's deletion, so it runs first.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	err := <-prepared
	if ctx.Err() != nil {
		t.Fatalf("PrepareRuntime ended by the caller's deadline: %v", err)
	}
	var te *incus.RequestTimeoutError
	// The bound is 3 s, plus the server-side timeout (whole tens of
	// seconds) when the request was an operation wait.
	if !errors.As(err, &te) || !errors.Is(err, shared.ErrUnavailable) || te.Bound%(10*time.Second) != 3*time.Second || !strings.Contains(err.Error(), "no answer within "+te.Bound.String()) {
		t.Fatalf("PrepareRuntime: %v; want ErrUnavailable naming the bound of one Incus request (3s, plus a wait's own timeout)", err)
	}
	t.Logf("PrepareRuntime with LXD stopped: %v", err)
}

// Issue 17.1: an sh that exits 0 printing nothing lists no special files;
// the collection must not take that for an empty listing and read a FIFO.
func TestCollectArtifactsWithAReplacedShIsASystemFailure(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l := w.prepareWithArtifacts(t, &job, "/out")
	if code, out := w.guest(t, l.Instance, "sh", "-c", `mkdir -p /out && mkfifo /out/pipe && printf '#!/bin/busybox true\n' > /bin/sh.new && chmod 755 /bin/sh.new && mv /bin/sh.new /bin/sh`); code != 0 {
		t.Fatalf("guest setup: exit %d: %s", code, out)
	}
	res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	// The tar way says it got no archive and no reason; the file API's
	// listing, that its marker never came.
	if !errors.Is(err, shared.ErrUnavailable) || !(strings.Contains(err.Error(), "marker") || strings.Contains(err.Error(), "with no archive")) {
		t.Fatalf("CollectArtifacts = %+v, %v; want ErrUnavailable saying the listing did not run", res, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), shared.CleanupTimeout)
	defer cancel()
	if cres, err := w.e.Cleanup(ctx, shared.CleanupRequest{Job: job}); err != nil || !cres.Deleted {
		t.Fatalf("Cleanup = %+v, %v; want the instance deleted", cres, err)
	}
}

// Issue 17.10: a start that fails (a profile's character device whose
// source is missing: checked at start, not at create) leaves the instance
// to Cleanup, which deletes it.
func TestAFailedStartLeavesNoInstanceAfterCleanup(t *testing.T) {
	w := newWholeEnv(t)
	profile := "pikaci-broken-start"
	ctx := t.Context()
	if _, err := w.d.Do(ctx, "POST", "/1.0/profiles", map[string]any{"name": profile, "devices": map[string]any{
		"broken": map[string]string{"type": "unix-char", "source": "/dev/pikaci-broken-start", "path": "/dev/pikaci-broken"},
	}}); err != nil {
		t.Fatalf("create profile %s: %v", profile, err)
	}
	job := w.job(t, "true")
	job.Runtime.Profiles = []string{profile}
	l, _ := layout.Derive(job.JobSpec)
	t.Cleanup(func() {
		// After the instance's deletion (registered earlier, runs later).
		_, _ = w.d.Do(context.Background(), "DELETE", "/1.0/profiles/"+profile, nil)
	})
	if _, err := w.e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job}); err == nil {
		t.Fatal("PrepareRuntime succeeded with a disk whose source is missing")
	} else {
		t.Logf("PrepareRuntime: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, shared.CleanupTimeout)
	defer cancel()
	if res, err := w.e.Cleanup(cctx, shared.CleanupRequest{Job: job}); err != nil || !res.Deleted {
		t.Fatalf("Cleanup = %+v, %v; want the instance deleted", res, err)
	}
	if _, err := w.lxd.Instance(ctx, wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("instance left after Cleanup: %v", err)
	}
}
