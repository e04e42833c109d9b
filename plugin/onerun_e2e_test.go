package plugin_test

// One run of a job at a time (issue 17 point 6), through runner-host and
// the plugin binary against a real sshd and a real LXD daemon.

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// A second run of a job while the first lives is refused at once, naming
// the live run's instance; the first runs on untouched and ends well. Then,
// its runner killed (SIGKILL: no cleanup) and its heartbeat gone stale, the
// next run deletes the stale instance, says so, and runs.
func TestWholeJob_SecondRunOfALiveJobIsRefusedThenTakesOverAStaleOne(t *testing.T) {
	x := newE2E(t)
	j := x.job(t, "hash-onerun", "echo started; sleep 6; echo finished", nil)
	var out, errOut watchBuffer
	_, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
	out.await(t, "started\n")

	code, _, stderr := x.run(t, j)
	if code != 125 || !strings.Contains(stderr, "already has a live run") || !strings.Contains(stderr, j.instance) {
		t.Errorf("second run: exit %d, stderr %q; want 125 (a system failure) and a refusal naming the live run's instance %s", code, stderr, j.instance)
	}
	if first := x.wait(t, done); first != 0 || !strings.Contains(out.String(), "finished\n") {
		t.Errorf("first run: exit %d, stdout %q; want it to run to its end, untouched (stderr:\n%s)", first, out.String(), errOut.String())
	}
	if rec := e2eRecord(t, j.jobDir); rec.ExitCode == nil || *rec.ExitCode != 0 || rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("first run's record: exit code %v, cleanup %+v; want 0 and its instance deleted", rec.ExitCode, rec.Cleanup)
	}
	x.gone(t, j.instance)

	// The runner dies with its instance alive.
	var out2, errOut2 watchBuffer
	cmd, done2 := x.start(t, &out2, &errOut2, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", j.file)
	out2.await(t, "started\n")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	x.wait(t, done2)
	code, _, stderr = x.run(t, j)
	if code != 125 || !strings.Contains(stderr, "already has a live run") {
		t.Errorf("run right after the runner died: exit %d; want 125, refused while the heartbeat is fresh (stderr %q)", code, stderr)
	}
	// Age the heartbeat past shared.StaleAfter, as 90 s without a runner
	// would.
	old := time.Now().UTC().Add(-2 * shared.StaleAfter).Format(time.RFC3339)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := x.d.Do(ctx, "PATCH", "/1.0/instances/"+j.instance+"?project="+e2eProject,
		map[string]any{"config": map[string]string{shared.LabelHeartbeat: old}}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := x.run(t, j)
	if code != 0 || !strings.Contains(stdout, "finished\n") || !strings.Contains(stderr, "deleted the stale instance") {
		t.Errorf("run after the heartbeat went stale: exit %d, stdout %q, stderr %q; want 0, the job run, and the stale instance's deletion said", code, stdout, stderr)
	}
	if rec := e2eRecord(t, j.jobDir); !slices.ContainsFunc(rec.Warnings, func(w string) bool {
		return strings.Contains(w, "deleted the stale instance") && strings.Contains(w, j.instance)
	}) {
		t.Errorf("record's warnings %q: want the takeover said, naming %s", rec.Warnings, j.instance)
	}
	x.gone(t, j.instance)
}
