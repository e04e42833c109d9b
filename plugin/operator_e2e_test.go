package plugin_test

// What an operator sees from the runner-host binary, against the real sshd
// and LXD daemon (issue 18): the exit code and the record's failure tell a
// broken build from a broken runner.

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// runEnv runs `runner-host run` on a job to its end with extra variables
// in its environment.
func (x *e2eEnv) runEnv(t *testing.T, j e2eJob, env []string, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut watchBuffer
	args := append([]string{"run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file}, extra...)
	done := x.startEnv(t, &out, &errOut, env, args...)
	code = x.wait(t, done)
	t.Logf("%s runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(env, " "), strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestOperator_ExitCodeAndRecordTellABuildFailureFromASystemFailure(t *testing.T) {
	x := newE2E(t)
	gitlab := []string{"BUILD_FAILURE_EXIT_CODE=7", "SYSTEM_FAILURE_EXIT_CODE=8"}
	overCap := `a=/run/pika-cloud/artifacts; mkdir -p $a && printf 12345678901234567890 > $a/big`
	tests := []struct {
		name        string
		script      string
		edit        func(*shared.WholeJob)
		env         []string
		wantCode    int
		wantFailure string
		wantStderr  string
	}{
		{name: "a passing job", script: "true", wantCode: 0, wantStderr: "runner-host: exit 0 (passed) after "},
		{name: "a failing job passes its code through", script: "exit 3", wantCode: 3, wantFailure: host.FailureBuild},
		{name: "a missing image is a system failure", script: "true",
			edit:     func(j *shared.WholeJob) { j.Runtime.Image = "no-such-image" },
			wantCode: 125, wantFailure: host.FailureSystem, wantStderr: `"no-such-image"`},
		{name: "artifacts over their cap after a passing job are a system failure", script: overCap,
			edit:     func(j *shared.WholeJob) { j.Artifacts.MaxBytes = 10 },
			wantCode: 125, wantFailure: host.FailureSystem, wantStderr: "artifacts.max_bytes 10"},
		{name: "GitLab: a failing job exits BUILD_FAILURE_EXIT_CODE", script: "exit 3", env: gitlab,
			wantCode: 7, wantFailure: host.FailureBuild},
		{name: "GitLab: a system failure exits SYSTEM_FAILURE_EXIT_CODE", script: "true", env: gitlab,
			edit:     func(j *shared.WholeJob) { j.Runtime.Image = "no-such-image" },
			wantCode: 8, wantFailure: host.FailureSystem, wantStderr: `"no-such-image"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := x.job(t, "hash-exit-"+string(rune('a'+i)), tt.script, tt.edit)
			code, _, stderr := x.runEnv(t, j, tt.env)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr lacks %q", tt.wantStderr)
			}
			// A line as each phase ends, then the summary.
			for _, w := range []string{"runner-host: preflight: ", "runner-host: exit "} {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if tt.wantCode == 0 {
				for _, w := range []string{"runner-host: staged snapshot ", "runner-host: instance " + j.instance + " ready in ", "(image " + lxdtest.ImageAlias + " ", "runner-host: collected 0 artifacts"} {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr lacks %q", w)
					}
				}
			}
			rec := e2eRecord(t, j.jobDir)
			if rec.Failure != tt.wantFailure {
				t.Errorf("record failure %q, want %q", rec.Failure, tt.wantFailure)
			}
			x.gone(t, j.instance)
		})
	}
}

// startEnv is start with env added to runner-host's environment (and
// GitLab's variables dropped from it unless env sets them).
func (x *e2eEnv) startEnv(t *testing.T, stdout, stderr *watchBuffer, env []string, args ...string) <-chan int {
	t.Helper()
	cmd := exec.Command(x.runnerHost, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILD_FAILURE_EXIT_CODE=") && !strings.HasPrefix(kv, "SYSTEM_FAILURE_EXIT_CODE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
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
	return done
}

// check runs `runner-host check` on a job file with an ssh config.
func (x *e2eEnv) check(t *testing.T, j e2eJob, sshConfig string, extra ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut watchBuffer
	args := append([]string{"check", "--plugin-dir", x.pluginDir, "--ssh-config", sshConfig, "--job", j.file}, extra...)
	done := x.startEnv(t, &out, &errOut, nil, args...)
	code = x.wait(t, done)
	t.Logf("runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestOperator_CheckSaysWhatIsWrongAndWhatToDo(t *testing.T) {
	x := newE2E(t)
	emptyKH := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(emptyKH, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unknownKey := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(unknownKey, []byte(x.srv.ConfigBlock("vm-host", emptyKH)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		edit      func(*shared.WholeJob)
		sshConfig string
		wantCode  int
		want      []string // lines, or parts of them, in stdout
	}{
		{name: "all good", wantCode: 0, want: []string{
			`✓ the job's inputs`, `✓ ssh host "vm-host" in the ssh config`, `✓ ssh login to "vm-host"`,
			`✓ remote.work_dir`, `✓ Incus API at unix://`, `✓ project "` + e2eProject + `": exists`,
			`✓ image alias "` + lxdtest.ImageAlias + `" in project`, `✓ profile "default" in project`}},
		{name: "a host alias not in the ssh config", edit: func(j *shared.WholeJob) { j.Remote.Host = "vm-typo" }, wantCode: 125, want: []string{
			`✗ ssh host "vm-typo" in the ssh config: no Host block in `, `to fix: add "Host vm-typo"`}},
		{name: "an unknown host key", sshConfig: unknownKey, wantCode: 125, want: []string{
			`✓ ssh host "vm-host" in the ssh config`, `✗ ssh login to "vm-host"`, "to fix: check the fingerprint SHA256:", "then: ssh-keyscan -p "}},
		{name: "a missing project", edit: func(j *shared.WholeJob) { j.Remote.Incus.Project = "no-such-project" }, wantCode: 125, want: []string{
			`✓ Incus API`, `✗ project "no-such-project"`, "to fix: incus project create no-such-project"}},
		{name: "a missing image", edit: func(j *shared.WholeJob) { j.Runtime.Image = "no-such-image" }, wantCode: 125, want: []string{
			`✓ project`, `✗ image alias "no-such-image" in project "` + e2eProject + `"`, "to fix: incus image import"}},
		{name: "a missing profile", edit: func(j *shared.WholeJob) { j.Runtime.Profiles = []string{"gpu"} }, wantCode: 125, want: []string{
			`✓ profile "default"`, `✗ profile "gpu" in project`, "to fix: incus profile create gpu"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := x.job(t, "hash-check-"+string(rune('a'+i)), "true", tt.edit)
			cfg := x.sshConfig
			if tt.sshConfig != "" {
				cfg = tt.sshConfig
			}
			code, stdout, _ := x.check(t, j, cfg)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			if _, err := os.Stat(x.work); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("check changed the remote host: %s exists (%v)", x.work, err)
			}
		})
	}
}

func TestOperator_RunStopsAtTheFirstFailedCheckBeforeChangingAnything(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-run-check", "true", func(j *shared.WholeJob) { j.Runtime.Image = "no-such-image" })
	code, _, stderr := x.run(t, j)
	if code != 125 {
		t.Errorf("exit code %d, want 125", code)
	}
	for _, w := range []string{`preflight: ✗ image alias "no-such-image"`, "to fix: incus image import"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q", w)
		}
	}
	rec := e2eRecord(t, j.jobDir)
	if len(rec.Phases) != 0 || rec.Failure != host.FailureSystem || rec.Cleanup != nil {
		t.Errorf("record: phases %v, failure %q, cleanup %+v; want no phase run, a system failure, nothing to clean up", rec.Phases, rec.Failure, rec.Cleanup)
	}
	if len(rec.Preflight) == 0 || rec.Preflight[len(rec.Preflight)-1].OK {
		t.Errorf("record's preflight %+v: want the checks, the last failed", rec.Preflight)
	}
	if _, err := os.Stat(x.work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused run changed the remote host: %s exists (%v)", x.work, err)
	}
}

func TestOperator_ACommandMissingFromTheImageIsNamed(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-notfound", "true", func(j *shared.WholeJob) { j.Command.Argv = []string{"make", "test"} })
	code, _, stderr := x.run(t, j)
	if code != 127 {
		t.Errorf("exit code %d, want 127 (the job's own)", code)
	}
	if want := `command "make" was probably not found in the instance`; !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q", want)
	}
	rec := e2eRecord(t, j.jobDir)
	if rec.Failure != host.FailureBuild || !strings.Contains(rec.Error, `command "make"`) {
		t.Errorf("record failure %q error %q: want a build failure naming the command", rec.Failure, rec.Error)
	}
	x.gone(t, j.instance)
}

func TestOperator_SweepThatDeletesNothingSaysWhatItLookedAt(t *testing.T) {
	x := newE2E(t)
	var out, errOut watchBuffer
	args := []string{"sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--host", "vm-host",
		"--project", e2eProject, "--incus-endpoint", "unix://" + x.d.Socket, "--older-than", "1000h"}
	code := x.wait(t, x.startEnv(t, &out, &errOut, nil, args...))
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	want := `nothing to delete: no instance in project "` + e2eProject + `" on host "vm-host" is labelled user.pikaci.run, created more than 1000h0m0s ago and not live (no live jobs given)`
	if code != 0 || !strings.Contains(out.String(), want) {
		t.Errorf("exit %d, stdout %q: want 0 and %q", code, out.String(), want)
	}
}

func TestOperator_AWrongSocketPathIsNamedOnceAndNothingIsCleanedUp(t *testing.T) {
	x := newE2E(t)
	const socket = "/nonexistent/incus.socket"
	j := x.job(t, "hash-socket", "true", func(j *shared.WholeJob) { j.Remote.Incus.Endpoint = "unix://" + socket })
	code, _, stderr := x.run(t, j)
	if code != 125 {
		t.Errorf("exit code %d, want 125", code)
	}
	n := 0
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, socket) {
			n++
		}
	}
	if n != 1 || !strings.Contains(stderr, "preflight: ✗ Incus API at unix://"+socket) {
		t.Errorf("%d lines name %s; want exactly one, the failed preflight check", n, socket)
	}
	if strings.Contains(stderr, "cleanup") {
		t.Errorf("stderr speaks of a cleanup, for an instance never created")
	}
	if rec := e2eRecord(t, j.jobDir); rec.Cleanup != nil || len(rec.Phases) != 0 {
		t.Errorf("record: phases %v cleanup %+v; want none", rec.Phases, rec.Cleanup)
	}
}

func TestOperator_AJobDirNotShapedRootRunJobsJobIsRefusedBeforeAnythingRuns(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-jobdir", "true", nil)
	// One level short: <root>/runs/run-1/<job>, whose grandparent "runs"
	// would be taken for the run id.
	bad := filepath.Join(filepath.Dir(filepath.Dir(j.jobDir)), j.job.Job.ID)
	if err := os.MkdirAll(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	j.job.Host.JobDir = bad
	data, err := json.Marshal(j.job)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(j.file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := "host.job_dir " + shared.Show(bad) + ` is not shaped <root>/<run id>/jobs/<job>: its parent is "run-1", not "jobs"`
	for _, verb := range []string{"check", "run"} {
		t.Run(verb, func(t *testing.T) {
			var code int
			var stdout, stderr string
			if verb == "check" {
				code, stdout, stderr = x.check(t, j, x.sshConfig)
			} else {
				code, stdout, stderr = x.run(t, j)
			}
			if code != 125 {
				t.Errorf("exit code %d, want 125", code)
			}
			if !strings.Contains(stdout+stderr, want) {
				t.Errorf("output lacks %q", want)
			}
			if _, err := os.Stat(x.work); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused job changed the remote host: %s exists (%v)", x.work, err)
			}
			x.gone(t, layout.InstanceName("runs", j.job.Job.ID))
		})
	}
	if rec := e2eRecord(t, bad); len(rec.Phases) != 0 || rec.Failure != host.FailureSystem || !strings.Contains(rec.Error, want) {
		t.Errorf("record: phases %v failure %q error %q; want no phase, a system failure, the shape named", rec.Phases, rec.Failure, rec.Error)
	}
}

func TestOperator_SweepOfAProjectThatDoesNotExistIsAnErrorNamingIt(t *testing.T) {
	x := newE2E(t)
	var out, errOut watchBuffer
	args := []string{"sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--host", "vm-host",
		"--project", "no-such-project", "--incus-endpoint", "unix://" + x.d.Socket, "--older-than", "1h"}
	code := x.wait(t, x.startEnv(t, &out, &errOut, nil, args...))
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	if code != 125 {
		t.Errorf("exit code %d, want 125 (a system failure)", code)
	}
	want := `sweep: project "no-such-project" does not exist on host "vm-host"`
	if !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr lacks %q", want)
	}
	if strings.Contains(out.String(), "nothing to delete") {
		t.Errorf("stdout says there was nothing to delete in a project that does not exist")
	}
}
