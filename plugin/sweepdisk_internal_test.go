package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
)

// ageTree sets the modification time of p and everything below it (links
// themselves, not their targets) to now minus d.
func ageTree(tb testing.TB, p string, d time.Duration) {
	tb.Helper()
	t := time.Now().Add(-d)
	err := filepath.Walk(p, func(q string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(q, t, t) // Walk does not follow links below p
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func mkdirs(tb testing.TB, dirs ...string) {
	tb.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
}

// runSweepScript runs sweepDiskCommand in a local bash, as sshd would.
func runSweepScript(tb testing.TB, w string, older time.Duration, dry bool, runs, sources []string) shared.SweepResult {
	tb.Helper()
	return runSweepScriptAs(tb, nil, w, older, dry, runs, sources)
}

// runSweepScriptAs is runSweepScript with bash run under the command
// wrap (a setpriv to another user), when given.
func runSweepScriptAs(tb testing.TB, wrap []string, w string, older time.Duration, dry bool, runs, sources []string) shared.SweepResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append(slices.Clone(wrap), "bash", "-c", sweepDiskCommand(w, older, dry))
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = bytes.NewReader(sweepDiskInput(runs, sources))
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("sweep script: %v", err)
	}
	var res shared.SweepResult
	if err := parseSweepDisk(out, "h", w, &res); err != nil {
		tb.Fatal(err)
	}
	return res
}

// The disk sweep removes, and names, the run dirs, temporary snapshot dirs
// and snapshot dirs unchanged for longer than the age that no live run
// holds or mounts; it leaves young and live ones, and never follows a link
// out of the work dir (what the link points at survives).
func TestSweepDiskRemovesOldUnusedEntriesAndNeverFollowsALink(t *testing.T) {
	base := t.TempDir()
	w := filepath.Join(base, "work dir 'q'")
	outside := filepath.Join(base, "outside")
	mkdirs(t, outside+"/keep",
		w+"/runs/old/jobs/j/artifacts", w+"/runs/live/jobs/j", w+"/runs/young/jobs/j",
		w+"/runs/young/.pikaci-sync-snapshot-aa/deep",
		w+"/snapshots/h-old/snapshot", w+"/snapshots/h-used/snapshot", w+"/snapshots/h-young/snapshot",
		w+"/snapshots/h-young/.pikaci-sync-snapshot-bb/x")
	if err := os.WriteFile(outside+"/keep/file", []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{w + "/runs/link-out", w + "/snapshots/link-out", w + "/runs/old/jobs/j/artifacts/up"} {
		if err := os.Symlink(outside, l); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{w + "/runs/old", w + "/runs/live", w + "/runs/young/.pikaci-sync-snapshot-aa",
		w + "/snapshots/h-old", w + "/snapshots/h-used", w + "/snapshots/h-young/.pikaci-sync-snapshot-bb", outside} {
		ageTree(t, p, 2*time.Hour)
	}
	// The live sources: one that a link leads to (resolved before it is
	// compared), and past 128 KiB of them, more than one argument of a
	// command line may hold.
	if err := os.Symlink(w+"/snapshots/h-used", w+"/used-link"); err != nil {
		t.Fatal(err)
	}
	sources := []string{w + "/used-link/snapshot", w + "/snapshots/h-used\nnl/snapshot"}
	mkdirs(t, w+"/snapshots/h-used\nnl/snapshot")
	ageTree(t, w+"/snapshots/h-used\nnl", 2*time.Hour)
	for i := range 1500 {
		sources = append(sources, fmt.Sprintf("%s/snapshots/gone-%04d/snapshot/%s", w, i, strings.Repeat("x", 60)))
	}

	dry := runSweepScript(t, w, time.Hour, true, []string{"live"}, sources)
	want := []string{"h:" + w + "/runs/old", "h:" + w + "/runs/young/.pikaci-sync-snapshot-aa",
		"h:" + w + "/snapshots/h-old", "h:" + w + "/snapshots/h-young/.pikaci-sync-snapshot-bb"}
	if diff := cmp.Diff(want, dry.Removed); diff != "" {
		t.Errorf("dry run names (-want +got):\n%s", diff)
	}
	for _, p := range want {
		if _, err := os.Lstat(strings.TrimPrefix(p, "h:")); err != nil {
			t.Errorf("after a dry run: %v; want it untouched", err)
		}
	}
	wantSkipped := []string{"h:" + w + "/runs/link-out: a symlink, not followed", "h:" + w + "/snapshots/link-out: a symlink, not followed"}
	if diff := cmp.Diff(wantSkipped, dry.Skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}

	res := runSweepScript(t, w, time.Hour, false, []string{"live"}, sources)
	if diff := cmp.Diff(want, res.Removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	for _, p := range want {
		if _, err := os.Lstat(strings.TrimPrefix(p, "h:")); !os.IsNotExist(err) {
			t.Errorf("%s after the sweep: %v; want it gone", p, err)
		}
	}
	for _, p := range []string{outside + "/keep/file", w + "/runs/live/jobs/j", w + "/runs/young/jobs/j",
		w + "/snapshots/h-used/snapshot", w + "/snapshots/h-used\nnl/snapshot", w + "/snapshots/h-young/snapshot", w + "/runs/link-out", w + "/snapshots/link-out"} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s after the sweep: %v; want it kept", p, err)
		}
	}

	// runs/ and snapshots/ that are links out of the work dir are named
	// and left: nothing behind them is looked at or removed.
	w2 := filepath.Join(base, "w2")
	mkdirs(t, w2, outside+"/runs/old-run", outside+"/snapshots/old-hash")
	ageTree(t, outside, 2*time.Hour)
	for _, d := range []string{"runs", "snapshots"} {
		if err := os.Symlink(filepath.Join(outside, d), filepath.Join(w2, d)); err != nil {
			t.Fatal(err)
		}
	}
	res2 := runSweepScript(t, w2, time.Hour, false, nil, nil)
	if len(res2.Removed) != 0 || len(res2.Skipped) != 2 {
		t.Errorf("work dir whose runs/ and snapshots/ are links out: %+v; want nothing removed, both named", res2)
	}
	for _, p := range []string{outside + "/runs/old-run", outside + "/snapshots/old-hash"} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s behind a link out of the work dir: %v; want it kept", p, err)
		}
	}

	// No work dir there: said, nothing else.
	gone := runSweepScript(t, filepath.Join(base, "nowhere"), 0, false, nil, nil)
	if len(gone.Removed) != 0 || !slices.Equal(gone.Skipped, []string{"h:" + filepath.Join(base, "nowhere") + ": no such directory there"}) {
		t.Errorf("missing work dir: %+v", gone)
	}
}

// A run is live when --live names it or an instance this sweep keeps
// labels it with a fresh heartbeat; its disk sources are kept too.
func TestDiskLiveCountsFreshKeptInstancesOnly(t *testing.T) {
	now := time.Now()
	fresh, stale := now.Add(-time.Minute).Format(time.RFC3339), now.Add(-time.Hour).Format(time.RFC3339)
	disk := func(src string) shared.Devices {
		return shared.Devices{"s": {"type": "disk", "source": src, "path": "/s"}, "n": {"type": "nic"}}
	}
	list := []incus.InstanceInfo{
		{Name: "a", Config: map[string]string{shared.LabelRun: "r-fresh", shared.LabelHeartbeat: fresh}, Devices: disk("/w/snapshots/h1/snapshot")},
		{Name: "b", Config: map[string]string{shared.LabelRun: "r-stale", shared.LabelHeartbeat: stale}, Devices: disk("/w/snapshots/h2/snapshot")},
		{Name: "c", Config: map[string]string{shared.LabelRun: "r-deleted", shared.LabelHeartbeat: fresh}, Devices: disk("/w/snapshots/h3/snapshot")},
		{Name: "d", Config: map[string]string{shared.LabelJob: "unlabelled"}, Devices: disk("/w/snapshots/h4/snapshot")},
	}
	// "r:x:job" may be run "r" or run "r:x" (a run id may hold ':'): both kept.
	runs, sources := diskLive(list, []string{"r-given:job", "r:x:job"}, []string{"c"}, now)
	if diff := cmp.Diff([]string{"r", "r-fresh", "r-given", "r:x"}, runs, cmpSorted); diff != "" {
		t.Errorf("live runs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/w/snapshots/h1/snapshot"}, sources); diff != "" {
		t.Errorf("live sources (-want +got):\n%s", diff)
	}
}

var cmpSorted = cmp.Transformer("sorted", func(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
})

// A sweep whose session is killed (the operator's Ctrl-C reaches the
// remote as a SIGKILL of the session's process, timeout(1)) removes
// nothing more once the entry in hand is done.
func TestSweepDiskStopsRemovingOnceItsSessionIsKilled(t *testing.T) {
	w := t.TempDir()
	const n = 300
	for i := range n {
		mkdirs(t, filepath.Join(w, "runs", fmt.Sprintf("r%03d", i), "jobs", "j"))
	}
	ageTree(t, w+"/runs", 2*time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", sweepDiskCommand(w, time.Hour, false))
	// A pipe of our own, read to the end: the script's output stays open
	// after the kill, so only the script's own check can stop it.
	out, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	// The first record: removals have started.
	buf := make([]byte, 1)
	for zeros := 0; zeros < 4; {
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("no first record: %v", err)
		}
		if buf[0] == 0 {
			zeros++
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil { // bash exec'd timeout
		t.Fatal(err)
	}
	_ = cmd.Wait()
	drained := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, out); close(drained) }()
	defer func() {
		select {
		case <-drained: // the script ended: its output closed
		case <-time.After(time.Minute):
			t.Errorf("the script still runs a minute after its session was killed")
		}
	}()
	// Wait until nothing more goes (bounded), then count what is left.
	left := func() int {
		entries, err := os.ReadDir(filepath.Join(w, "runs"))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	last := left()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		time.Sleep(time.Second)
		now := left()
		if now == last {
			break
		}
		last = now
	}
	if last == 0 {
		t.Errorf("every run dir was removed after the session was killed; want the sweep to stop")
	}
	t.Logf("%d of %d run dirs left", last, n)
}

// TestSweepDiskFailuresAreQuotedAndBounded: rm's messages are the remote's
// words; the error quotes each (no escape sequence reaches a terminal) and
// names at most maxSweepFailures of them, counting the rest.
func TestSweepDiskFailuresAreQuotedAndBounded(t *testing.T) {
	var out []byte
	for i := range maxSweepFailures + 5 {
		for _, f := range []string{"failed", "snapshot", fmt.Sprintf("/w/snapshots/h%02d", i), "rm: cannot remove: \x1b[31mPermission denied" + strings.Repeat("x", 1000)} {
			out = append(append(out, f...), 0)
		}
	}
	var res shared.SweepResult
	err := parseSweepDisk(out, "h", "/w", &res)
	if err == nil {
		t.Fatal("no error for failed removals")
	}
	msg := err.Error()
	if strings.Contains(msg, "\x1b") || !strings.Contains(msg, `\x1b[31m`) {
		t.Errorf("error holds the raw escape, or not the quoted one: %q", msg)
	}
	if !strings.Contains(msg, "; and 5 more") || strings.Contains(msg, "h10") || len(msg) > 10*700 {
		t.Errorf("error names more than %d failures or does not count the rest (%d bytes): %q", maxSweepFailures, len(msg), msg)
	}
}

// A snapshot may hold read-only dirs (a Go module cache does): the sweep,
// run as the work dir's owner and not as root, removes them all the same.
// (Root passes over modes: as root the test runs the sweep as nobody.)
func TestSweepDiskRemovesReadOnlyDirsAsTheirOwner(t *testing.T) {
	var wrap []string
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("root without setpriv: no way to run as another user")
		}
		uid, gid = 65534, 65534
		wrap = []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}
	}
	base := t.TempDir()
	for d := base; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil { // reachable by nobody
			t.Fatal(err)
		}
	}
	w := filepath.Join(base, "work")
	ro := w + "/snapshots/h-old/snapshot/pkg/mod/example.com/m@v1"
	mkdirs(t, ro, w+"/runs")
	if err := os.WriteFile(ro+"/go.mod", []byte("module m\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := filepath.Walk(w, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{ro, filepath.Dir(ro), w + "/snapshots/h-old/snapshot/pkg/mod"} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = exec.Command("chmod", "-R", "u+rwx", w).Run() })
	ageTree(t, w, 2*time.Hour)

	// rm's failure would be an error naming what it could not remove.
	res := runSweepScriptAs(t, wrap, w, time.Hour, false, nil, nil)
	if want := []string{"h:" + w + "/snapshots/h-old"}; !slices.Equal(res.Removed, want) {
		t.Errorf("removed %q; want %q", res.Removed, want)
	}
	if _, err := os.Lstat(w + "/snapshots/h-old"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the snapshot after the sweep: %v; want it gone", err)
	}
}
