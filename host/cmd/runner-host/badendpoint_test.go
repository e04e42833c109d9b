package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/shared"
)

// TestBadEndpointCreatesNothing (attack 9) runs `runner-host run` with the real
// plugin against a real sshd. A job whose second phase would be refused (a
// bad endpoint, caught by the host's checks; a payload without a manifest,
// caught by the plugin's dry run over SSH) creates no directory: the first
// phase never runs. A good job, run the same way, does create them, so the
// fixture can.
func TestBadEndpointCreatesNothing(t *testing.T) {
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	dir := t.TempDir()
	testbin.Install(t, dir, "executor-remote-linux-vm", testbin.Plugin, "")

	spec := func(work string) shared.JobSpec {
		jobDir := "/tmp/pikaci-a9/run-1/jobs/job-a9"
		return shared.JobSpec{
			Job:  shared.Job{ID: "job-a9"},
			Host: shared.HostPaths{JobDir: jobDir},
			Remote: shared.Remote{Host: "vm-host", WorkDir: work,
				Incus: shared.Incus{Project: "default", Endpoint: "unix:///nonexistent/incus.socket"}},
		}
	}
	run := func(t *testing.T, s shared.JobSpec, args ...string) (int, string) {
		job := writeJob(t, s, nil)
		code, _, stderr := runMain(t, append([]string{"run", "--plugin-dir", dir, "--ssh-config", cfg, "--job", job}, args...)...)
		return code, stderr
	}
	nothingCreated := func(t *testing.T, work string) {
		t.Helper()
		if _, err := os.Lstat(work); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remote work dir %s exists after a refused job (%v): the first phase ran", work, err)
		}
	}

	t.Run("bad endpoint", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work")
		s := spec(work)
		s.Remote.Incus.Endpoint = "http://127.0.0.1:8443"
		sessions := srv.Sessions()
		code, stderr := run(t, s)
		if code != exitSystemFailure || !strings.Contains(stderr, `remote.incus.endpoint "http://127.0.0.1:8443"`) {
			t.Errorf("exit %d, stderr %q: want a refusal naming the endpoint", code, stderr)
		}
		nothingCreated(t, work)
		if n := srv.Sessions() - sessions; n != 0 {
			t.Errorf("%d SSH sessions for a job refused on its input", n)
		}
	})

	t.Run("payload without a manifest", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work")
		s := spec(work)
		s.Job.Staged = true
		s.Host.StagedPayloads = []shared.StagedPayload{{Name: "deps", LocalDir: s.Host.JobDir + "/staged/deps"}}
		code, stderr := run(t, s)
		if code != exitSystemFailure || !strings.Contains(stderr, "checked before the first phase ran") || !strings.Contains(stderr, "manifest") {
			t.Errorf("exit %d, stderr %q: want the ConfigureDevices check to refuse the missing manifest", code, stderr)
		}
		nothingCreated(t, work)
	})

	t.Run("good job creates its directories", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work")
		code, stderr := run(t, spec(work), "--phases", "prepare-directories")
		if code != exitOK {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if fi, err := os.Stat(filepath.Join(work, "runs", "run-1", "jobs", "job-a9")); err != nil || !fi.IsDir() {
			t.Errorf("remote job dir not created: %v", err)
		}
	})
}
