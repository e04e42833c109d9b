package plugin_test

// What an operator sees from the runner-host binary, against the real sshd
// and LXD daemon (issue 18): the exit code and the record's failure tell a
// broken build from a broken runner.

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
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
		{name: "a passing job", script: "true", wantCode: 0},
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
