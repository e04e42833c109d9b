package main

import (
	"github.com/pikaci/vmexec/internal/testbin"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDev runs the demo end to end with the real plugin: both phases over
// real SSH to the in-process virtual remote, and the result matches the
// seed case's goldens.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	bin := testbin.Must(t, filepath.Join(dir, "executor-remote-linux-vm"), testbin.Plugin)
	code, stdout, stderr := runMain(t, "dev", "--plugin-dir", dir)
	if code != 0 {
		t.Fatalf("dev: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"prepare-directories: ",
		"configure-devices: ",
		"device pk-workspac-51fa7376: io.bus=virtiofs path=/staged/linux-rust/workspace-build readonly=true",
		"  /var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-deps\n",
		"SSH connections: 1\n",
		"mkdir command matches the case's want/mkdir: true\n",
		"device map matches the case's want/devices.json: true\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dev output lacks %q", want)
		}
	}

	// A dry run creates nothing and applies nothing.
	code, stdout, _ = runMain(t, "dev", "--plugin-dir", dir, "--dry-run")
	if code != 0 {
		t.Fatalf("dev --dry-run: exit %d", code)
	}
	if strings.Contains(stdout, "/var/tmp/pikaci/runs/run/jobs/job/vm\n") || !strings.HasSuffix(stdout, "devices on instance pikaci-6fd8c7b5193e:\n") {
		t.Errorf("dry run changed the remote:\n%s", stdout)
	}
	if !strings.Contains(stdout, "commands the remote host ran (1):") {
		t.Errorf("dry run ran other than its one read command:\n%s", stdout)
	}

	code, _, stderr = runMain(t, "dev", "--plugin-dir", dir, "--case", "no-such-case")
	if code != 2 || !strings.Contains(stderr, "no-such-case") {
		t.Errorf("unknown case: exit %d, stderr %q", code, stderr)
	}

	// With --job, dev runs a job file as `run` does (here a dry run, which
	// needs no remote host at all).
	job := writeJob(t, testSpec("dev-job"), nil)
	code, stdout, stderr = runMain(t, "dev", "--plugin-dir", dir, "--job", job, "--dry-run", "--phases", "prepare-directories")
	if code != 0 || !strings.Contains(stdout, "prepare-directories (dry run)") {
		t.Errorf("dev --job --dry-run: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, _ = runMain(t, "dev", "--plugin-dir", dir, "--ssh-config", "/x"); code != 2 {
		t.Errorf("--ssh-config without --job: exit %d, want 2", code)
	}
	_ = os.Remove(bin)
}
