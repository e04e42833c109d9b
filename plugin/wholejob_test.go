package plugin_test

// The whole job's instance phases against a real LXD daemon (the busybox
// image of internal/lxdtest) reached through a real sshd: PrepareRuntime,
// RunJob, Cleanup and Sweep.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// wholeJobProject holds the instances of these tests only, so a sweep
// sees nobody else's.
const wholeJobProject = "pikaci-wholejob"

// wholeEnv is a real sshd and a real LXD with the busybox image, and a
// plugin configured to reach both.
type wholeEnv struct {
	d           *lxdtest.Daemon
	srv         *sshdtest.Server
	e           *plugin.Executor
	lxd         *incus.Client // the test's own client, on the local socket
	work        string
	fingerprint string
}

func newWholeEnv(t *testing.T) *wholeEnv {
	t.Helper()
	sshdtest.Require(t)
	d := lxdtest.Shared(t)
	fp := d.BusyboxImage(t)
	d.CreateProject(t, wholeJobProject)
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	lxd := incus.NewUnix(d.Socket)
	t.Cleanup(lxd.Close)
	return &wholeEnv{d: d, srv: srv, e: e, lxd: lxd, work: filepath.Join(t.TempDir(), "ci work"), fingerprint: fp}
}

// job returns a whole job running argv in a container, with its snapshot
// dir made and holding hello.txt. Its instance is deleted at the end.
func (w *wholeEnv) job(t *testing.T, argv ...string) shared.WholeJob {
	t.Helper()
	id := fmt.Sprintf("wj-%d-%d", os.Getpid(), jobSeq.Add(1))
	spec := shared.JobSpec{
		Job:  shared.Job{ID: id},
		Host: shared.HostPaths{JobDir: "/tmp/pikaci-wj/run-1/jobs/" + id},
		Remote: shared.Remote{Host: "vm-host", WorkDir: w.work,
			Incus: shared.Incus{Project: wholeJobProject, Endpoint: "unix://" + w.d.Socket}},
	}
	l, err := layout.Derive(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.SnapshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.SnapshotDir, "hello.txt"), []byte("hello from the snapshot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := w.lxd.DeleteInstance(ctx, wholeJobProject, l.Instance); err != nil {
			t.Errorf("delete %s: %v", l.Instance, err)
		}
	})
	return shared.WholeJob{
		JobSpec: spec,
		Runtime: &shared.Runtime{Image: lxdtest.ImageAlias, InstanceType: incus.TypeContainer,
			Limits: shared.Limits{CPU: 1, Memory: "256MiB"}, ReadyTimeoutSecs: 60},
		Command: &shared.Command{Argv: argv},
	}
}

func (w *wholeEnv) prepare(t *testing.T, job shared.WholeJob) shared.RuntimeResult {
	t.Helper()
	res, err := w.e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// prepareWithArtifacts sets job's artifacts path, prepares it
// (PrepareRuntime), removes its local job dir when the test ends, and
// returns its layout.
func (w *wholeEnv) prepareWithArtifacts(t *testing.T, job *shared.WholeJob, path string) layout.Layout {
	t.Helper()
	job.Artifacts = &shared.Artifacts{Path: path}
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(job.Host.JobDir) })
	w.prepare(t, *job)
	return l
}

// cleanupDeletes runs Cleanup within shared.CleanupTimeout and fails t
// unless it deleted the job's instance and the instance is gone.
func (w *wholeEnv) cleanupDeletes(t *testing.T, job shared.WholeJob, instance string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), shared.CleanupTimeout)
	defer cancel()
	if res, err := w.e.Cleanup(ctx, shared.CleanupRequest{Job: job}); err != nil || !res.Deleted {
		t.Fatalf("Cleanup = %+v, %v; want the instance deleted", res, err)
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("instance %s left after Cleanup: %v", instance, err)
	}
}

// guest runs a command in the instance outside the plugin.
func (w *wholeEnv) guest(t *testing.T, instance string, argv ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code, err := w.lxd.Exec(t.Context(), wholeJobProject, instance, incus.ExecRequest{Command: argv, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("guest %q: %v", argv, err)
	}
	return code, out.String()
}

// chunks collects a job's output; lines gets each stdout line as it
// arrives.
type chunks struct {
	mu     sync.Mutex
	got    []shared.OutputChunk
	stdout bytes.Buffer
	lines  chan string
}

func newChunks() *chunks { return &chunks{lines: make(chan string, 1000)} }

func (c *chunks) sink(ch shared.OutputChunk) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, ch)
	if ch.Stream == shared.Stdout {
		c.stdout.Write(ch.Data)
		for {
			line, err := c.stdout.ReadString('\n')
			if err != nil {
				c.stdout.WriteString(line)
				break
			}
			c.lines <- strings.TrimSuffix(line, "\n")
		}
	}
	return nil
}

func (c *chunks) text(s shared.Stream) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, ch := range c.got {
		if ch.Stream == s {
			b.Write(ch.Data)
		}
	}
	return b.String()
}

func (c *chunks) await(t *testing.T, want string) {
	t.Helper()
	for {
		select {
		case l := <-c.lines:
			if l == want {
				return
			}
		case <-t.Context().Done():
			t.Fatalf("line %q never arrived", want)
		}
	}
}

func TestPrepareRuntimeCreatesAReadyInstance(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Runtime.Profiles = nil
	l, _ := layout.Derive(job.JobSpec)
	ctx := t.Context()

	dry, err := w.e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.lxd.Instance(ctx, wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("the dry run created the instance: %v", err)
	}

	// A previous attempt's instance (this job's labels) and artifacts.
	stale := map[string]string{shared.LabelRun: l.RunID, shared.LabelJob: l.JobID, shared.LabelCreated: "2020-01-01T00:00:00Z"}
	if err := w.lxd.CreateInstance(ctx, wholeJobProject, incus.CreateRequest{Name: l.Instance, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}, Config: stale}); err != nil {
		t.Fatal(err)
	}
	if err := w.lxd.Start(ctx, wholeJobProject, l.Instance); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(l.ArtifactsDir, "old dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.ArtifactsDir, "it's old"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	before := time.Now().UTC().Add(-time.Second)
	res := w.prepare(t, job)
	if !res.StaleDeleted {
		t.Error("StaleDeleted = false with a stale instance in place")
	}
	entries, err := os.ReadDir(l.ArtifactsDir)
	if err != nil || len(entries) != 0 {
		t.Errorf("artifacts dir after PrepareRuntime: %v, %v; want it empty", entries, err)
	}
	snap := devices.SnapshotDeviceName(l.SnapshotDir, devices.SnapshotGuestPath)
	wantDevices := shared.Devices{snap: {"type": "disk", "source": l.SnapshotDir, "path": "/workspace/snapshot", "readonly": "true", "shift": "false"}}
	if diff := cmp.Diff(wantDevices, res.Devices); diff != "" {
		t.Errorf("devices (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(res.Devices, dry.Devices); diff != "" {
		t.Errorf("dry run planned other devices (-real +dry):\n%s", diff)
	}
	got, err := w.d.Get(ctx, wholeJobProject, l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantDevices, got.Devices); diff != "" {
		t.Errorf("LXD's devices (-want +got):\n%s", diff)
	}
	created, err := time.Parse(time.RFC3339, got.Config[shared.LabelCreated])
	if err != nil || created.Before(before) || !strings.HasSuffix(got.Config[shared.LabelCreated], "Z") {
		t.Errorf("label %s = %q: want RFC 3339 UTC from this test", shared.LabelCreated, got.Config[shared.LabelCreated])
	}
	for k, v := range map[string]string{"limits.cpu": "1", "limits.memory": "256MiB", shared.LabelRun: "run-1", shared.LabelJob: job.Job.ID} {
		if got.Config[k] != v || res.Config[k] != v {
			t.Errorf("config %s: LXD %q, result %q; want %q", k, got.Config[k], res.Config[k], v)
		}
	}
	if res.Image != (shared.Image{Project: wholeJobProject, Alias: lxdtest.ImageAlias, Fingerprint: w.fingerprint}) {
		t.Errorf("image %+v, want fingerprint %s", res.Image, w.fingerprint)
	}
	if !slices.Equal(res.Profiles, []string{"default"}) || res.Type != incus.TypeContainer {
		t.Errorf("profiles %q type %q", res.Profiles, res.Type)
	}
	// Ready: an exec works at once, and the snapshot is shared read-only.
	code, out := w.guest(t, l.Instance, "sh", "-c", "cat /workspace/snapshot/hello.txt; touch /workspace/snapshot/x 2>/dev/null && echo WROTE; exit 0")
	if code != 0 || out != "hello from the snapshot\n" {
		t.Errorf("in the guest: exit %d, %q", code, out)
	}
}

func TestPrepareRuntimeMissingImage(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Runtime.Image = "no-such-image"
	l, _ := layout.Derive(job.JobSpec)
	_, err := w.e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: job})
	if !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("error kind %v, want ErrNotFound: %v", shared.KindOf(err), err)
	}
	for _, want := range []string{`"no-such-image"`, `"` + wholeJobProject + `"`, `"vm-host"`, "import it first"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("an instance was left: %v", err)
	}
}

// TestPrepareRuntimeMissingProjectIsNamed: LXD answers an image alias in a
// project that does not exist as a missing alias; the error says the
// project is missing (and how to create it), not "import the image".
func TestPrepareRuntimeMissingProjectIsNamed(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Remote.Incus.Project = "no-such-project"
	_, err := w.e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: job})
	if !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("error kind %v, want ErrNotFound: %v", shared.KindOf(err), err)
	}
	for _, want := range []string{`project "no-such-project" does not exist on host "vm-host"`, "incus project create no-such-project"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "import it first") {
		t.Errorf("error %q still says to import the image", err)
	}
}

func TestRunJobExitCodeOutputAndUser(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `pwd; cat hello.txt; echo "HOME=$HOME USER=$USER FOO=$FOO"; id -u; id -g; echo oops >&2; exit 3`)
	job.Command.User = 1000
	job.Command.Env = map[string]string{"FOO": "a 'b' c"}
	w.prepare(t, job)
	c := newChunks()
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, c.sink)
	if err != nil {
		t.Fatal(err)
	}
	if res != (shared.RunResult{ExitCode: 3}) {
		t.Errorf("result %+v, want exit 3", res)
	}
	wantOut := "/workspace/snapshot\nhello from the snapshot\nHOME=/home/ci USER=ci FOO=a 'b' c\n1000\n1000\n"
	if got := c.text(shared.Stdout); got != wantOut {
		t.Errorf("stdout %q, want %q", got, wantOut)
	}
	if got := c.text(shared.Stderr); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
	// Every request, websockets included, went over one SSH connection.
	if n := w.srv.AcceptedConnections(); n != 1 {
		t.Errorf("%d SSH connections, want 1", n)
	}
}

func TestRunJobMissingCwdRunsNothing(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "touch", "/tmp/ran")
	job.Command.Cwd = "/no/such dir"
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	_, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, newChunks().sink)
	if !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), `"/no/such dir"`) {
		t.Fatalf("error %v: want ErrNotFound naming the cwd", err)
	}
	if code, _ := w.guest(t, l.Instance, "test", "-e", "/tmp/ran"); code == 0 {
		t.Error("the command ran despite its missing cwd")
	}
}

func TestRunJobOutputIsLive(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second")
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	c := newChunks()
	type result struct {
		res shared.RunResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, c.sink)
		done <- result{res, err}
	}()
	// The job cannot end until /tmp/go exists, made only once "first"
	// reached the sink: output held back until the end would never come.
	c.await(t, "first")
	select {
	case r := <-done:
		t.Fatalf("RunJob returned before the job was let go: %+v", r)
	default:
	}
	if code, _ := w.guest(t, l.Instance, "touch", "/tmp/go"); code != 0 {
		t.Fatal("touch failed")
	}
	r := <-done
	if r.err != nil || r.res.ExitCode != 0 {
		t.Fatalf("RunJob = %+v, %v", r.res, r.err)
	}
	if got := c.text(shared.Stdout); got != "first\nsecond\n" {
		t.Errorf("stdout %q", got)
	}
}

// noJobProcess fails when any process of the guest runs a command line
// containing marker.
func (w *wholeEnv) noJobProcess(t *testing.T, instance, marker string) {
	t.Helper()
	code, out := w.guest(t, instance, "ps", "-o", "pid,args")
	if code != 0 {
		t.Fatalf("ps: exit %d: %s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, marker) {
			t.Errorf("a job process is still running: %s\n%s", line, out)
		}
	}
}

func TestRunJobTimeoutSignalsThenKills(t *testing.T) {
	w := newWholeEnv(t)
	// SIGTERM is ignored: only the SIGKILL 10 s later ends it.
	job := w.job(t, "sh", "-c", `trap "" TERM; echo started; while :; do sleep 0.2; done # marker-ignore-term`)
	job.Command.TimeoutSecs = 1
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	c := newChunks()
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, c.sink)
	if err != nil {
		t.Fatal(err)
	}
	if res != (shared.RunResult{ExitCode: 137, TimedOut: true, TimeoutSecs: 1}) {
		t.Errorf("result %+v, want exit 137 (SIGKILL), timed out, limit 1", res)
	}
	w.noJobProcess(t, l.Instance, "marker-ignore-term")
}

// TestRunJobStopBoundStartsWhenTheJobEnds: the bound on signalling and
// waiting after a timeout runs from the timeout, not from the job's start.
// With that bound shortened to KillGrace+ForceStopGrace, a job that times
// out after 16 s must still get its SIGTERM (and its trap's exit code),
// where a bound counted from the start would have expired at 15 s.
func TestRunJobStopBoundStartsWhenTheJobEnds(t *testing.T) {
	defer plugin.SetTerminateBound(0)()
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `trap "exit 42" TERM; echo started; while :; do sleep 0.2; done # marker-long`)
	job.Command.TimeoutSecs = 16
	w.prepare(t, job)
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, newChunks().sink)
	if err != nil {
		t.Fatal(err)
	}
	if res != (shared.RunResult{ExitCode: 42, TimedOut: true, TimeoutSecs: 16}) {
		t.Errorf("result %+v, want exit 42 (its TERM trap), timed out, limit 16", res)
	}
}

func TestRunJobTimeoutEndsAChildHoldingTheOutput(t *testing.T) {
	w := newWholeEnv(t)
	// sh dies of SIGTERM but its child keeps stdout open, so the exec
	// stays open until the child is ended, without stopping the instance.
	job := w.job(t, "sh", "-c", "sleep 1000 & echo started; wait")
	job.Command.TimeoutSecs = 1
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	res, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, newChunks().sink)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut {
		t.Errorf("result %+v, want timed out", res)
	}
	w.noJobProcess(t, l.Instance, "sleep 1000")
	if got := w.status(t, l.Instance); got != "Running" {
		t.Errorf("instance %s after the timeout: %s, want Running", l.Instance, got)
	}
}

func TestRunJobCancelSignalsBeforeReturning(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `trap "echo got-TERM; exit 5" TERM; echo started; while :; do sleep 0.2; done # marker-cancel`)
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	c := newChunks()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		c.await(t, "started")
		cancel()
	}()
	_, err := w.e.RunJob(ctx, shared.RunRequest{Job: job}, c.sink)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want a cancellation", err)
	}
	if got := c.text(shared.Stdout); got != "started\ngot-TERM\n" {
		t.Errorf("stdout %q: the job did not get SIGTERM before RunJob returned", got)
	}
	w.noJobProcess(t, l.Instance, "marker-cancel")
}

func TestCleanupIsIdempotent(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	for i, want := range []bool{true, false} {
		res, err := w.e.Cleanup(t.Context(), shared.CleanupRequest{Job: job})
		if err != nil || res != (shared.CleanupResult{Instance: l.Instance, Deleted: want}) {
			t.Errorf("Cleanup #%d = %+v, %v; want deleted %v", i+1, res, err, want)
		}
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("instance left after Cleanup: %v", err)
	}
}

// The instance name is 48 bits of a hash of "<run id>:<job id>" and ids
// may hold ':': an instance of the job's name that another job (or someone
// else) owns is never deleted, by PrepareRuntime or Cleanup.
func TestPrepareRuntimeAndCleanupLeaveAnotherJobsInstance(t *testing.T) {
	w := newWholeEnv(t)
	for _, c := range []struct {
		name   string
		labels func(l layout.Layout) map[string]string
	}{
		// Run "<run>:<job>" job "x" would share the name with run "<run>"
		// job "<job>:x"; here the labels only have to differ from ours.
		{"another job's", func(l layout.Layout) map[string]string {
			return map[string]string{shared.LabelRun: l.RunID + ":" + l.JobID, shared.LabelJob: "x"}
		}},
		{"no labels", func(layout.Layout) map[string]string { return nil }},
		{"only the run label", func(l layout.Layout) map[string]string { return map[string]string{shared.LabelRun: l.RunID} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			job := w.job(t, "true")
			l, _ := layout.Derive(job.JobSpec)
			ctx := t.Context()
			labels := c.labels(l)
			if err := w.lxd.CreateInstance(ctx, wholeJobProject, incus.CreateRequest{Name: l.Instance, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}, Config: labels}); err != nil {
				t.Fatal(err)
			}
			_, err := w.e.PrepareRuntime(ctx, shared.RuntimeRequest{Job: job})
			if !errors.Is(err, shared.ErrConflict) || !strings.Contains(err.Error(), l.Instance) || !strings.Contains(err.Error(), shared.Show(l.JobID)) {
				t.Errorf("PrepareRuntime: %v; want a conflict naming %s and the job", err, l.Instance)
			}
			res, err := w.e.Cleanup(ctx, shared.CleanupRequest{Job: job})
			if !errors.Is(err, shared.ErrConflict) || !strings.Contains(err.Error(), l.Instance) || res.Deleted {
				t.Errorf("Cleanup: %+v, %v; want a conflict naming %s", res, err, l.Instance)
			}
			got, err := w.lxd.Instance(ctx, wholeJobProject, l.Instance)
			if err != nil {
				t.Fatalf("the other instance is gone: %v", err)
			}
			for k, v := range labels {
				if got.Config[k] != v {
					t.Errorf("the other instance's %s = %q, want %q (replaced?)", k, got.Config[k], v)
				}
			}
			if _, ok := got.Config[shared.LabelCreated]; ok {
				t.Errorf("the other instance was replaced by the job's: %v", got.Config)
			}
		})
	}
}

// The collision the name derivation allows: run "a:b" job "c" and run "a"
// job "b:c" share an instance name.
func TestInstanceNameCollisionNeedsTheLabels(t *testing.T) {
	if layout.InstanceName("a:b", "c") != layout.InstanceName("a", "b:c") {
		t.Fatal("no collision: the label check may no longer be needed")
	}
}

func TestSweep(t *testing.T) {
	w := newWholeEnv(t)
	const project = "pikaci-sweep"
	w.d.CreateProject(t, project)
	ctx := t.Context()
	old := time.Now().UTC().Add(-2 * time.Hour).Format(time.RFC3339)
	young := time.Now().UTC().Format(time.RFC3339)
	instances := map[string]map[string]string{
		"sw-old":        {shared.LabelRun: "r1", shared.LabelJob: "a", shared.LabelCreated: old},
		"sw-old-live":   {shared.LabelRun: "r1", shared.LabelJob: "b", shared.LabelCreated: old},
		"sw-young":      {shared.LabelRun: "r1", shared.LabelJob: "c", shared.LabelCreated: young},
		"sw-undated":    {shared.LabelRun: "r1", shared.LabelJob: "d", shared.LabelCreated: "yesterday"},
		"sw-unlabelled": {shared.LabelJob: "e", shared.LabelCreated: old},
	}
	for name, cfg := range instances {
		if err := w.lxd.CreateInstance(ctx, project, incus.CreateRequest{Name: name, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}, Config: cfg}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.lxd.DeleteInstance(context.Background(), project, name) })
	}
	if err := w.lxd.Start(ctx, project, "sw-old"); err != nil { // a running one is deleted too
		t.Fatal(err)
	}
	req := shared.SweepRequest{
		Remote:    shared.Remote{Host: "vm-host", Incus: shared.Incus{Project: project, Endpoint: "unix://" + w.d.Socket}},
		OlderThan: time.Hour, Live: []string{"r1:b"}, DryRun: true,
	}
	names := func() []string {
		list, err := w.lxd.ListInstances(ctx, project)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range list {
			out = append(out, i.Name)
		}
		slices.Sort(out)
		return out
	}
	all := names()
	dry, err := w.e.Sweep(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(shared.SweepResult{Deleted: []string{"sw-old"}, DryRun: true}, dry); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(all, names()); diff != "" {
		t.Errorf("the dry run deleted (-before +after):\n%s", diff)
	}
	req.DryRun = false
	res, err := w.e.Sweep(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(shared.SweepResult{Deleted: []string{"sw-old"}}, res); diff != "" {
		t.Errorf("sweep (-want +got):\n%s", diff)
	}
	want := []string{"sw-old-live", "sw-undated", "sw-unlabelled", "sw-young"}
	if diff := cmp.Diff(want, names()); diff != "" {
		t.Errorf("instances left (-want +got):\n%s", diff)
	}
}

func TestPrepareRuntimeDryRunOfAVirtualMachine(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Runtime.InstanceType = incus.TypeVirtualMachine
	job.Runtime.Profiles = []string{"extra", "more"}
	job.Runtime.Limits = shared.Limits{}
	l, _ := layout.Derive(job.JobSpec)
	res, err := w.e.PrepareRuntime(t.Context(), shared.RuntimeRequest{Job: job, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	// LXD 5.0 lacks the virtiofs bus extension: no io.bus, and a warning.
	snap := devices.SnapshotDeviceName(l.SnapshotDir, devices.SnapshotGuestPath)
	want := shared.RuntimeResult{
		Instance: l.Instance, Project: wholeJobProject,
		Image: shared.Image{Project: wholeJobProject, Alias: lxdtest.ImageAlias, Fingerprint: w.fingerprint},
		Type:  incus.TypeVirtualMachine, Profiles: []string{"default", "extra", "more"},
		Config: map[string]string{"limits.cpu": "2", "limits.memory": "4GiB", shared.LabelRun: "run-1", shared.LabelJob: job.Job.ID,
			shared.LabelCreated: res.Config[shared.LabelCreated], shared.LabelHeartbeat: res.Config[shared.LabelCreated],
			shared.LabelNonce: res.Config[shared.LabelNonce]},
		Devices:  shared.Devices{snap: {"type": "disk", "source": l.SnapshotDir, "path": "/workspace/snapshot", "readonly": "true", "shift": "false"}},
		Warnings: []string{devices.WarnNoVirtiofsBus},
		DryRun:   true,
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if n := res.Config[shared.LabelNonce]; !nonceShape.MatchString(n) {
		t.Errorf("nonce %q: want 24 hex digits", n)
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("the dry run created the instance: %v", err)
	}
}

func TestRunJobSinkFailureStopsTheJob(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "sh", "-c", `trap "exit 9" TERM; echo started; while :; do sleep 0.1; done # marker-sink`)
	l, _ := layout.Derive(job.JobSpec)
	w.prepare(t, job)
	broken := errors.New("the host went away")
	_, err := w.e.RunJob(t.Context(), shared.RunRequest{Job: job}, func(shared.OutputChunk) error { return broken })
	if !errors.Is(err, broken) {
		t.Fatalf("error %v, want the sink's", err)
	}
	w.noJobProcess(t, l.Instance, "marker-sink")
}

// nonceShape is a run nonce: 12 random bytes in hex.
var nonceShape = regexp.MustCompile(`^[0-9a-f]{24}$`)
