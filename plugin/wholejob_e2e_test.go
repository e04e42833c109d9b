package plugin_test

// The whole job end to end, through the real parts only: the runner-host
// binary loads the real plugin binary, which reaches a real sshd on
// loopback and, through it (streamlocal), a real LXD daemon running busybox
// containers. Every test checks runner-host's exit code, the run record in
// <job_dir>/pikaci-execution.json, and that the instance is gone (a GET on
// the daemon's socket answers 404).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// e2eProject holds these tests' instances only.
const e2eProject = "pikaci-e2e"

// e2eRunLimit bounds one runner-host run.
const e2eRunLimit = 3 * time.Minute

// e2eBinaries returns runner-host and a plugin dir holding our plugin, both
// built once per test binary (testbin.BuildOnce; TestMain removes them).
func e2eBinaries(t *testing.T) (runnerHost, pluginDir string) {
	t.Helper()
	pluginDir = testbin.TempDir(t)
	testbin.Install(t, pluginDir, host.Prefix+"remote-linux-vm", testbin.Plugin, "")
	return testbin.BuildOnce(t, "runner-host", testbin.RunnerHost, ""), pluginDir
}

// e2eEnv is one test's real parts: the shared LXD daemon with the busybox
// image, an sshd of the test's own, both binaries, and a remote work dir.
type e2eEnv struct {
	d                     *lxdtest.Daemon
	srv                   *sshdtest.Server
	sshConfig             string
	runnerHost, pluginDir string
	work, root            string
	fingerprint           string
}

func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	sshdtest.Require(t)
	d := lxdtest.Shared(t)
	fp := d.BusyboxImage(t)
	d.CreateProject(t, e2eProject)
	rh, pd := e2eBinaries(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	root := t.TempDir()
	return &e2eEnv{
		d: d, srv: srv, sshConfig: srv.WriteClientConfig(t, "vm-host"),
		runnerHost: rh, pluginDir: pd,
		work: filepath.Join(root, "remote work"), root: root, fingerprint: fp,
	}
}

// e2eJob is a job file written for runner-host.
type e2eJob struct {
	file, jobDir string
	job          shared.WholeJob
	instance     string
}

// job writes a whole job running `sh -c script` in a busybox container,
// whose snapshot (hash) is a tree with spaces and quotes in its names, a
// symlink and an executable. edit may change it before it is written.
func (x *e2eEnv) job(t *testing.T, hash, script string, edit func(*shared.WholeJob)) e2eJob {
	t.Helper()
	id := fmt.Sprintf("e2e-%d-%d", os.Getpid(), jobSeq.Add(1))
	jobDir := filepath.Join(x.root, "runs", "run-1", "jobs", id)
	snap := filepath.Join(x.root, "snapshots", hash)
	if err := os.MkdirAll(jobDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap); errors.Is(err, os.ErrNotExist) {
		writeSnapshot(t, snap, hash, 3)
	}
	job := shared.WholeJob{
		JobSpec: shared.JobSpec{
			Job:  shared.Job{ID: id, Staged: true},
			Host: shared.HostPaths{JobDir: jobDir, SnapshotDir: snap, SnapshotContentHash: hash},
			Remote: shared.Remote{Host: "vm-host", WorkDir: x.work,
				Incus: shared.Incus{Project: e2eProject, Endpoint: "unix://" + x.d.Socket}},
		},
		Runtime: &shared.Runtime{Image: lxdtest.ImageAlias, InstanceType: incus.TypeContainer,
			Limits: shared.Limits{CPU: 1, Memory: "256MiB"}, ReadyTimeoutSecs: 60},
		Command:   &shared.Command{Argv: []string{"sh", "-c", script}, TimeoutSecs: 120},
		Artifacts: &shared.Artifacts{MaxBytes: 1 << 20},
	}
	if edit != nil {
		edit(&job)
	}
	l, err := layout.Derive(job.JobSpec)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(x.root, id+".json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Should a test fail before cleanup, the instance goes anyway.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = x.d.Do(ctx, "DELETE", "/1.0/instances/"+l.Instance+"?project="+e2eProject, nil)
	})
	return e2eJob{file: file, jobDir: jobDir, job: job, instance: l.Instance}
}

// start starts `runner-host args...`; its output goes to the buffers. The
// channel gets its exit code (-1 when a signal killed it). A process still
// running at the test's end is killed.
func (x *e2eEnv) start(t *testing.T, stdout, stderr *watchBuffer, args ...string) (*exec.Cmd, <-chan int) {
	t.Helper()
	cmd := exec.Command(x.runnerHost, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		done <- cmd.ProcessState.ExitCode()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd, done
}

// run runs `runner-host run` on a job to its end.
func (x *e2eEnv) run(t *testing.T, j e2eJob, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut watchBuffer
	args := append([]string{"run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file}, extra...)
	_, done := x.start(t, &out, &errOut, args...)
	code = x.wait(t, done)
	t.Logf("runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func (x *e2eEnv) wait(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(e2eRunLimit):
		t.Fatalf("runner-host still running after %s", e2eRunLimit)
	}
	return -1
}

// gone fails unless a GET of the instance on the daemon's socket answers
// 404.
func (x *e2eEnv) gone(t *testing.T, instance string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := x.d.Do(ctx, "GET", "/1.0/instances/"+instance+"?project="+e2eProject, nil)
	if err == nil || !strings.Contains(err.Error(), ": 404: ") {
		t.Errorf("instance %s: GET answered %v; want 404 (it should be gone)", instance, err)
	}
}

func e2eRecord(t *testing.T, jobDir string) host.Record {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(jobDir, host.RecordFile))
	if err != nil {
		t.Fatal(err)
	}
	var rec host.Record
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		t.Fatalf("record %s: %v\n%s", host.RecordFile, err, data)
	}
	return rec
}

// phasesOf lists the record's phases, a failed one marked.
func phasesOf(rec host.Record) []string {
	out := []string{}
	for _, p := range rec.Phases {
		if p.Error != "" {
			out = append(out, p.Name+" (failed)")
			continue
		}
		out = append(out, p.Name)
	}
	return out
}

var e2eAllPhases = []string{host.PhasePrepareDirectories, host.PhaseStageWorkspaceSnapshot, host.PhasePrepareRuntime,
	host.PhaseLaunchGuest, host.PhaseWaitForCompletion, host.PhaseCollectArtifacts}

// watchBuffer is an output buffer safe to read while written, which says
// when it first holds a string.
type watchBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ws  []watch
}

type watch struct {
	s  string
	ch chan struct{}
}

func (b *watchBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, _ := b.buf.Write(p)
	b.ws = slices.DeleteFunc(b.ws, func(w watch) bool {
		if strings.Contains(b.buf.String(), w.s) {
			close(w.ch)
			return true
		}
		return false
	})
	return n, nil
}

func (b *watchBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// await waits until the buffer holds s.
func (b *watchBuffer) await(t *testing.T, s string) {
	t.Helper()
	b.mu.Lock()
	ch := make(chan struct{})
	if strings.Contains(b.buf.String(), s) {
		close(ch)
	} else {
		b.ws = append(b.ws, watch{s: s, ch: ch})
	}
	b.mu.Unlock()
	select {
	case <-ch:
	case <-time.After(e2eRunLimit):
		t.Fatalf("%q never appeared; output so far:\n%s", s, b.String())
	}
}

// processesWith lists this machine's processes whose command line holds
// marker (the containers' included: their PID namespace is a child of
// ours).
func processesWith(t *testing.T, marker string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if s := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(s, marker) {
			out = append(out, e.Name()+": "+s)
		}
	}
	return out
}

// childrenNamed lists the pids of parent's children whose name is comm.
func childrenNamed(t *testing.T, parent int, comm string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == parent && strings.HasPrefix(comm, string(stat[open+1:end])) {
			out = append(out, pid)
		}
	}
	return out
}

// sleepMarker is a sleep duration no other process on the machine uses.
func sleepMarker() string { return strconv.Itoa(700000 + rand.IntN(200000)) }

func TestWholeJob_ExitCodeSnapshotAndArtifacts(t *testing.T) {
	x := newE2E(t)
	script := `set -e
pwd
test -x build.sh && ./build.sh
cat "main link"
cat "src \"quoted\"/it's here/main file.rs"
a=/run/pika-cloud/artifacts
mkdir -p "$a/sub dir"
echo result > "$a/sub dir/result.txt"
printf '#!/bin/sh\n' > "$a/tool" && chmod 4755 "$a/tool"
ln -s "sub dir/result.txt" "$a/inner link"
echo to-stderr >&2
exit 3`
	j := x.job(t, "hash-one", script, nil)
	code, stdout, stderr := x.run(t, j)
	if code != 3 {
		t.Errorf("exit code %d, want the job's 3", code)
	}
	if want := "/workspace/snapshot\nfn main() {}\nfn main() {}\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "to-stderr\n") {
		t.Errorf("stderr %q lacks the job's stderr", stderr)
	}
	x.gone(t, j.instance)

	rec := e2eRecord(t, j.jobDir)
	if diff := cmp.Diff(e2eAllPhases, phasesOf(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	if rec.ExitCode == nil || *rec.ExitCode != 3 || rec.TimedOut || rec.Error != "" {
		t.Errorf("record: exit %v timed out %v error %q; want 3, false, none", rec.ExitCode, rec.TimedOut, rec.Error)
	}
	if rec.Snapshot.Reused || rec.Snapshot.BytesSent <= 0 {
		t.Errorf("snapshot %+v: want sent", rec.Snapshot)
	}
	if rec.Image != (shared.Image{Project: e2eProject, Alias: lxdtest.ImageAlias, Fingerprint: x.fingerprint}) {
		t.Errorf("image %+v", rec.Image)
	}
	if rec.Instance != j.instance || rec.Cleanup == nil || !rec.Cleanup.Deleted || rec.Cleanup.Error != "" {
		t.Errorf("instance %q cleanup %+v: want %s deleted", rec.Instance, rec.Cleanup, j.instance)
	}
	dest := filepath.Join(j.jobDir, "artifacts")
	want := map[string]string{
		".":                  "dir -rwxr-xr-x",
		"sub dir":            "dir -rwxr-xr-x",
		"sub dir/result.txt": "file -rw-r--r-- " + sha8("result\n"),
		"tool":               "file -rwxr-xr-x " + sha8("#!/bin/sh\n"), // set-uid dropped
		"inner link":         "link -> sub dir/result.txt",
	}
	if diff := cmp.Diff(want, treeOf(t, dest)); diff != "" {
		t.Errorf("artifacts (-want +got):\n%s", diff)
	}
	if rec.Artifacts == nil || rec.Artifacts.Dir != dest || rec.Artifacts.Files != 3 || len(rec.Artifacts.Warnings) != 0 {
		t.Errorf("artifacts record %+v: want 3 entries in %s, no warning", rec.Artifacts, dest)
	}
}

func TestWholeJob_SnapshotReused(t *testing.T) {
	x := newE2E(t)
	first := x.job(t, "hash-reuse", "cat build.sh >/dev/null", nil)
	second := x.job(t, "hash-reuse", "cat build.sh >/dev/null", nil)
	if code, _, _ := x.run(t, first); code != 0 {
		t.Fatalf("first job: exit %d", code)
	}
	if rec := e2eRecord(t, first.jobDir); rec.Snapshot.Reused || rec.Snapshot.BytesSent <= 0 {
		t.Errorf("first job's snapshot %+v: want sent", rec.Snapshot)
	}
	if code, _, _ := x.run(t, second); code != 0 {
		t.Fatalf("second job: exit %d", code)
	}
	rec := e2eRecord(t, second.jobDir)
	if diff := cmp.Diff(host.SnapshotRecord{Reused: true, BytesSent: 0}, rec.Snapshot); diff != "" {
		t.Errorf("second job's snapshot (-want +got):\n%s", diff)
	}
	x.gone(t, first.instance)
	x.gone(t, second.instance)
}

func TestWholeJob_Timeout(t *testing.T) {
	x := newE2E(t)
	marker := sleepMarker()
	j := x.job(t, "hash-timeout", "echo started; exec sleep "+marker, func(j *shared.WholeJob) { j.Command.TimeoutSecs = 1 })
	code, stdout, stderr := x.run(t, j)
	if code != 124 {
		t.Errorf("exit code %d, want 124", code)
	}
	if stdout != "started\n" || !strings.Contains(stderr, "timed out after 1 s") {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
	rec := e2eRecord(t, j.jobDir)
	if !rec.TimedOut || rec.TimeoutSecs != 1 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("record: timed out %v after %d, cleanup %+v; want timed out after 1, deleted", rec.TimedOut, rec.TimeoutSecs, rec.Cleanup)
	}
	if diff := cmp.Diff(e2eAllPhases, phasesOf(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	x.gone(t, j.instance)
	if left := processesWith(t, "sleep "+marker); len(left) != 0 {
		t.Errorf("the job's processes are left: %q", left)
	}
}

func TestWholeJob_Signals(t *testing.T) {
	x := newE2E(t)
	for _, tt := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			marker := sleepMarker()
			j := x.job(t, "hash-signal", "echo started; exec sleep "+marker, nil)
			var out, errOut watchBuffer
			cmd, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
			out.await(t, "started\n")
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			code := x.wait(t, done)
			t.Logf("stderr:\n%s", errOut.String())
			if code != tt.want {
				t.Errorf("exit code %d, want %d", code, tt.want)
			}
			x.gone(t, j.instance)
			rec := e2eRecord(t, j.jobDir)
			if rec.Cleanup == nil || !rec.Cleanup.Deleted {
				t.Errorf("cleanup %+v: want the instance deleted", rec.Cleanup)
			}
			if left := processesWith(t, "sleep "+marker); len(left) != 0 {
				t.Errorf("the job's processes are left: %q", left)
			}
		})
	}
}

func TestWholeJob_PluginKilledMidRun(t *testing.T) {
	x := newE2E(t)
	marker := sleepMarker()
	j := x.job(t, "hash-killed", "echo started; exec sleep "+marker, nil)
	var out, errOut watchBuffer
	cmd, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
	out.await(t, "started\n")
	kids := childrenNamed(t, cmd.Process.Pid, host.Prefix+"remote-linux-vm")
	if len(kids) != 1 {
		t.Fatalf("plugin processes under runner-host: %v, want one", kids)
	}
	if err := syscall.Kill(kids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	code := x.wait(t, done)
	t.Logf("stderr:\n%s", errOut.String())
	if code != 125 {
		t.Errorf("exit code %d, want 125 (a system failure)", code)
	}
	if !strings.Contains(errOut.String(), "phase "+host.PhaseWaitForCompletion) {
		t.Errorf("stderr does not name the phase %s", host.PhaseWaitForCompletion)
	}
	x.gone(t, j.instance)
	rec := e2eRecord(t, j.jobDir)
	want := append(slices.Clone(e2eAllPhases[:4]), host.PhaseWaitForCompletion+" (failed)")
	if diff := cmp.Diff(want, phasesOf(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	if rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("cleanup %+v: want the instance deleted by the restarted plugin", rec.Cleanup)
	}
	if left := processesWith(t, "sleep "+marker); len(left) != 0 {
		t.Errorf("the job's processes are left: %q", left)
	}
}

func TestWholeJob_ArtifactLinks(t *testing.T) {
	x := newE2E(t)
	script := `set -e
a=/run/pika-cloud/artifacts
mkdir -p "$a/deep/er"
echo kept > "$a/deep/file"
ln -s /etc/shadow "$a/shadow"
ln -s ../../.. "$a/deep/er/up"
ln -s ../file "$a/deep/er/inside"`
	j := x.job(t, "hash-links", script, nil)
	if code, _, _ := x.run(t, j); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	x.gone(t, j.instance)
	rec := e2eRecord(t, j.jobDir)
	if rec.Artifacts == nil {
		t.Fatalf("no artifacts record; error %q", rec.Error)
	}
	for _, name := range []string{`"/run/pika-cloud/artifacts/shadow"`, `"/run/pika-cloud/artifacts/deep/er/up"`} {
		if !slices.ContainsFunc(rec.Artifacts.Warnings, func(w string) bool { return strings.Contains(w, "skipped symlink "+name) }) {
			t.Errorf("no warning names %s: %q", name, rec.Artifacts.Warnings)
		}
	}
	want := map[string]string{
		".":              "dir -rwxr-xr-x",
		"deep":           "dir -rwxr-xr-x",
		"deep/er":        "dir -rwxr-xr-x",
		"deep/file":      "file -rw-r--r-- " + sha8("kept\n"),
		"deep/er/inside": "link -> ../file",
	}
	if diff := cmp.Diff(want, treeOf(t, filepath.Join(j.jobDir, "artifacts"))); diff != "" {
		t.Errorf("artifacts (-want +got):\n%s", diff)
	}
}

func TestWholeJob_ArtifactByteCap(t *testing.T) {
	x := newE2E(t)
	script := `a=/run/pika-cloud/artifacts
mkdir -p $a && printf 12345 > $a/a-small && printf 12345678901234567890 > $a/b-big`
	j := x.job(t, "hash-cap", script, func(j *shared.WholeJob) { j.Artifacts.MaxBytes = 10 })
	// An earlier run's file: this run's record counts this run's only.
	earlier := filepath.Join(j.jobDir, "artifacts", "earlier-run.txt")
	if err := os.MkdirAll(filepath.Dir(earlier), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(earlier, []byte("from an earlier run"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := x.run(t, j)
	if code != 125 {
		t.Errorf("exit code %d, want 125 (a system failure: the artifacts passed their cap after a passing job)", code)
	}
	for _, s := range []string{"artifacts.max_bytes 10", `"/run/pika-cloud/artifacts/b-big"`, "phase " + host.PhaseCollectArtifacts} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	x.gone(t, j.instance)
	rec := e2eRecord(t, j.jobDir)
	if diff := cmp.Diff(append(slices.Clone(e2eAllPhases[:5]), host.PhaseCollectArtifacts+" (failed)"), phasesOf(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	if rec.ExitCode == nil || *rec.ExitCode != 0 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("record: exit %v cleanup %+v", rec.ExitCode, rec.Cleanup)
	}
	want := map[string]string{".": "dir -rwxr-xr-x", "a-small": "file -rw-r--r-- " + sha8("12345")}
	if diff := cmp.Diff(want, treeOf(t, filepath.Join(j.jobDir, "artifacts"))); diff != "" {
		t.Errorf("what was copied before the cap, and only that (-want +got):\n%s", diff)
	}
	// The collection failed part-way: the record still counts what it copied.
	if diff := cmp.Diff(&host.ArtifactsRecord{Dir: filepath.Join(j.jobDir, "artifacts"), Files: 1, Bytes: 5}, rec.Artifacts); diff != "" {
		t.Errorf("record's artifacts after the cap (-want +got):\n%s", diff)
	}
}

func TestWholeJob_MissingImage(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-noimage", "true", func(j *shared.WholeJob) { j.Runtime.Image = "no-such-image" })
	code, _, stderr := x.run(t, j)
	if code != 125 {
		t.Errorf("exit code %d, want 125 (a system failure)", code)
	}
	// The preflight finds it before the first phase (issue 18): nothing ran,
	// so there is nothing to clean up.
	for _, s := range []string{`"no-such-image"`, `project "` + e2eProject + `"`, "preflight: ✗ image alias"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	x.gone(t, j.instance)
	rec := e2eRecord(t, j.jobDir)
	if diff := cmp.Diff([]string{}, phasesOf(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	if !strings.Contains(rec.Error, `"no-such-image"`) || rec.Cleanup != nil {
		t.Errorf("record error %q cleanup %+v: want the alias named, no cleanup (nothing ran)", rec.Error, rec.Cleanup)
	}
}

func TestWholeJob_Sweep(t *testing.T) {
	x := newE2E(t)
	const project = "pikaci-e2e-sweep"
	x.d.CreateProject(t, project)
	lxd := incus.NewUnix(x.d.Socket)
	t.Cleanup(lxd.Close)
	ctx := t.Context()
	old := time.Now().UTC().Add(-2 * time.Hour).Format(time.RFC3339)
	young := time.Now().UTC().Format(time.RFC3339)
	for name, cfg := range map[string]map[string]string{
		"e2e-old":        {shared.LabelRun: "r1", shared.LabelJob: "a", shared.LabelCreated: old},
		"e2e-old-live":   {shared.LabelRun: "r1", shared.LabelJob: "b", shared.LabelCreated: old},
		"e2e-young":      {shared.LabelRun: "r1", shared.LabelJob: "c", shared.LabelCreated: young},
		"e2e-unlabelled": {shared.LabelJob: "d", shared.LabelCreated: old},
	} {
		if err := lxd.CreateInstance(ctx, project, incus.CreateRequest{Name: name, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}, Config: cfg}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = lxd.DeleteInstance(context.Background(), project, name) })
	}
	live := filepath.Join(x.root, "live")
	if err := os.WriteFile(live, []byte("# running\nr1:b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut watchBuffer
	_, done := x.start(t, &out, &errOut, "sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig,
		"--host", "vm-host", "--project", project, "--incus-endpoint", "unix://"+x.d.Socket,
		"--older-than", "1h", "--live", live, "--json")
	code := x.wait(t, done)
	if code != 0 {
		t.Fatalf("sweep: exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	var res shared.SweepResult
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("sweep output %q: %v", out.String(), err)
	}
	if diff := cmp.Diff(shared.SweepResult{Deleted: []string{"e2e-old"}}, res); diff != "" {
		t.Errorf("sweep result (-want +got):\n%s", diff)
	}
	list, err := lxd.ListInstances(ctx, project)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range list {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"e2e-old-live", "e2e-unlabelled", "e2e-young"}, names); diff != "" {
		t.Errorf("instances left (-want +got):\n%s", diff)
	}
}

// The job's output reaches runner-host's stdout while the job runs: the job
// cannot end before the test, having seen its first line, lets it go.
func TestWholeJob_LiveOutput(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-live", "echo first; echo err-first >&2; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second", nil)
	var out, errOut watchBuffer
	_, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
	out.await(t, "first\n")
	errOut.await(t, "err-first\n")
	select {
	case code := <-done:
		t.Fatalf("runner-host ended (exit %d) before the job was let go", code)
	default:
	}
	lxd := incus.NewUnix(x.d.Socket)
	defer lxd.Close()
	if code, err := lxd.Exec(t.Context(), e2eProject, j.instance, incus.ExecRequest{Command: []string{"touch", "/tmp/go"}}); err != nil || code != 0 {
		t.Fatalf("touch /tmp/go: %d, %v", code, err)
	}
	if code := x.wait(t, done); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, errOut.String())
	}
	if got := out.String(); got != "first\nsecond\n" {
		t.Errorf("stdout %q", got)
	}
	x.gone(t, j.instance)
}
