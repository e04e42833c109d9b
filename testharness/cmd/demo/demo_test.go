package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"
)

// TestDemo runs the demo end to end with the real plugin binary: the whole
// seed job on the in-process virtual remote, every closing check true; and
// the version 1 phases matching the seed case's goldens.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	testbin.Install(t, dir, "executor-remote-linux-vm", testbin.Plugin, "")

	var out, errOut bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errOut}
	if err := app.ParseFlags([]string{"--plugin-dir", dir}); err != nil {
		t.Fatal(err)
	}
	if err := app.Run(t.Context()); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{
		"stdout | step compile\n",
		"stderr | warning: 1 unused import\n",
		"device pk-workspac-51fa7376: source=/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build path=/staged/linux-rust/workspace-build readonly=true io.bus=virtiofs\n",
		`logs/test.log: "test result: ok. 3 passed\n"`,
		`"name": "wait_for_completion"`,
		"output live (first chunk arrived while the job ran): true\n",
		"instance deleted: true\n",
		"run record written: true\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), ": false\n") {
		t.Errorf("a check is false:\n%s", out.String())
	}

	out.Reset()
	app = &App{Stdout: &out, Stderr: &errOut}
	if err := app.ParseFlags([]string{"--plugin-dir", dir, "--phases"}); err != nil {
		t.Fatal(err)
	}
	if err := app.Run(t.Context()); err != nil {
		t.Fatalf("demo --phases: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"mkdir command matches the case's want/mkdir: true\n",
		"device map matches the case's want/devices.json: true\n",
		"SSH connections: 1\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo --phases output lacks %q:\n%s", want, out.String())
		}
	}

	// A plugin name that is not one component is refused before anything
	// runs.
	app = &App{Stdout: &out, Stderr: &errOut}
	if err := app.ParseFlags([]string{"--plugin", "../evil"}); err == nil || !strings.Contains(err.Error(), "../evil") {
		t.Errorf("--plugin ../evil: %v", err)
	}
}

// TestRunnerDoesNotLinkHarness: the runner binary links no package of the
// harness (the demo is where the embedded remote lives).
func TestRunnerDoesNotLinkHarness(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", "github.com/pikaci/vmexec/host/cmd/runner-host").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/pikaci/vmexec/testharness") {
			t.Errorf("runner-host links %s", pkg)
		}
	}
}
