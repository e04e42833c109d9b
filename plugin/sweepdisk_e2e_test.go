package plugin_test

// The remote disk sweep (issue 17, "Remote disk") through runner-host and
// the plugin binary, against a real sshd and a real LXD daemon.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ageAll sets the modification time of each path and everything below it
// (links themselves, never their targets) to two hours ago.
func ageAll(t *testing.T, paths ...string) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour)
	for _, p := range paths {
		err := filepath.Walk(p, func(q string, info os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if info.Mode()&os.ModeSymlink != 0 {
				return nil // os.Chtimes would follow it
			}
			return os.Chtimes(q, old, old)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func plant(t *testing.T, files ...string) {
	t.Helper()
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("left by a run\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// `runner-host sweep --work-dir` removes, naming each, the run dirs, the
// temporary snapshot dirs and the snapshot dirs unchanged or unused for
// longer than --older-than; it keeps the run of a live job (its instance's
// heartbeat is fresh) and the snapshot that job mounts however old they
// look, a snapshot a run reused since (reuse marks use), and what a planted
// link points at outside the work dir. --dry-run names the same and
// removes nothing.
func TestSweep_RemovesOldRunAndSnapshotDirsButNothingLiveOrBehindALink(t *testing.T) {
	x := newE2E(t)
	w := x.work
	// A run that leaves the snapshot hash-reused.
	first := x.job(t, "hash-reused", "true", nil)
	if code, _, _ := x.run(t, first); code != 0 {
		t.Fatalf("first job: exit %d", code)
	}
	outside := filepath.Join(x.root, "outside the work dir")
	plant(t, w+"/runs/old-run/jobs/j/artifacts/a.txt",
		w+"/runs/old-run/.pikaci-sync-snapshot-0a/f",
		w+"/snapshots/old-hash/snapshot/f",
		w+"/snapshots/hash-reused/.pikaci-sync-snapshot-1b/f",
		outside+"/old/f")
	if err := os.Symlink(outside, w+"/runs/planted-link"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, w+"/snapshots/old-hash/snapshot/up"); err != nil {
		t.Fatal(err)
	}
	ageAll(t, w, outside)

	// A live job, whose run dir and snapshot then look two hours old.
	live := x.job(t, "hash-live", "echo started; sleep 40", nil)
	var out, errOut watchBuffer
	_, done := x.start(t, &out, &errOut, "run", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig, "--job", live.file)
	out.await(t, "started\n")
	// A run that reuses hash-reused: its use is marked.
	reuse := x.job(t, "hash-reused", "true", nil)
	if code, _, stderr := x.run(t, reuse); code != 0 || !strings.Contains(stderr, "reused") {
		t.Fatalf("reusing job: exit %d, stderr %q; want 0 and the snapshot reused", code, stderr)
	}
	ageAll(t, w+"/runs/run-1", w+"/snapshots/hash-live")

	sweep := func(extra ...string) (int, string, string) {
		var o, e watchBuffer
		args := append([]string{"sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.sshConfig,
			"--host", "vm-host", "--project", e2eProject, "--incus-endpoint", "unix://" + x.d.Socket,
			"--older-than", "1h", "--work-dir", w}, extra...)
		_, d := x.start(t, &o, &e, args...)
		code := x.wait(t, d)
		t.Logf("runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, o.String(), e.String())
		return code, o.String(), e.String()
	}
	victims := []string{w + "/runs/old-run", w + "/snapshots/old-hash", w + "/snapshots/hash-reused/.pikaci-sync-snapshot-1b"}
	lines := func(verb string) []string {
		var l []string
		for _, v := range victims {
			l = append(l, verb+" vm-host:"+v)
		}
		l = append(l, "left vm-host:"+w+"/runs/planted-link: a symlink, not followed")
		slices.Sort(l)
		return l
	}

	code, stdout, _ := sweep("--dry-run")
	if code != 0 {
		t.Fatalf("dry run: exit %d", code)
	}
	if diff := cmp.Diff(lines("would remove"), removalLines(stdout)); diff != "" {
		t.Errorf("dry run's lines (-want +got):\n%s", diff)
	}
	for _, v := range victims {
		if _, err := os.Lstat(v); err != nil {
			t.Errorf("after the dry run: %v; want %s untouched", err, v)
		}
	}

	code, stdout, _ = sweep()
	if code != 0 {
		t.Fatalf("sweep: exit %d", code)
	}
	if diff := cmp.Diff(lines("removed"), removalLines(stdout)); diff != "" {
		t.Errorf("sweep's lines (-want +got):\n%s", diff)
	}
	for _, v := range victims {
		if _, err := os.Lstat(v); !os.IsNotExist(err) {
			t.Errorf("%s after the sweep: %v; want it gone", v, err)
		}
	}
	for _, p := range []string{outside + "/old/f", w + "/runs/planted-link", w + "/runs/run-1/jobs/" + live.job.Job.ID,
		w + "/snapshots/hash-live/snapshot", w + "/snapshots/hash-reused/snapshot"} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s after the sweep: %v; want it kept", p, err)
		}
	}
	if code := x.wait(t, done); code != 0 {
		t.Errorf("the live job: exit %d; want it to run to its end untouched (stderr:\n%s)", code, errOut.String())
	}
	x.gone(t, live.instance)
}

// removalLines keeps a sweep's lines about the disk, sorted.
func removalLines(stdout string) []string {
	var out []string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "removed ") || strings.HasPrefix(l, "would remove ") || strings.HasPrefix(l, "left ") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// On a cluster, `sweep --work-dir --member ...` sweeps each member's own
// work dir over the member's ssh_host, one command each: what old runs
// left goes on every member, what a planted link points at stays.
func TestClusterSweep_RemovesOldRunDirsOnEachMember(t *testing.T) {
	x := newClusterEnv(t)
	e := x.e2e()
	args := []string{"sweep", "--plugin-dir", x.pluginDir, "--ssh-config", x.c.SSHConfig,
		"--host", x.c.Members[0].SSHAlias, "--incus-endpoint", "unix://" + x.c.Members[0].Socket,
		"--project", "default", "--older-than", "1h", "--work-dir", x.work}
	var want []string
	for _, m := range x.c.Members {
		args = append(args, "--member", m.Name+"="+m.SSHAlias)
		w := filepath.Join(m.MemberDir(), "work")
		outside := filepath.Join(m.MemberDir(), "outside-"+m.Name)
		plant(t, w+"/runs/old-run-"+m.Name+"/jobs/j/f", w+"/snapshots/old-hash-"+m.Name+"/snapshot/f", outside+"/f")
		if err := os.Symlink(outside, w+"/runs/link-"+m.Name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(outside); _ = os.Remove(w + "/runs/link-" + m.Name) })
		ageAll(t, w+"/runs/old-run-"+m.Name, w+"/snapshots/old-hash-"+m.Name, outside)
		want = append(want, "removed "+m.SSHAlias+":"+x.work+"/runs/old-run-"+m.Name,
			"removed "+m.SSHAlias+":"+x.work+"/snapshots/old-hash-"+m.Name,
			"left "+m.SSHAlias+":"+x.work+"/runs/link-"+m.Name+": a symlink, not followed")
	}
	var out, errOut watchBuffer
	_, done := e.start(t, &out, &errOut, args...)
	code := e.wait(t, done)
	t.Logf("sweep: exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	if code != 0 {
		t.Fatalf("sweep: exit %d", code)
	}
	slices.Sort(want)
	// Other tests' leftovers on the shared cluster may be removed too:
	// only this test's lines are compared.
	var got []string
	for _, l := range removalLines(out.String()) {
		for _, m := range x.c.Members {
			if strings.HasSuffix(l, "-"+m.Name) || strings.Contains(l, "/runs/link-"+m.Name+":") {
				got = append(got, l)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sweep's lines (-want +got):\n%s", diff)
	}
	for _, m := range x.c.Members {
		w := filepath.Join(m.MemberDir(), "work")
		if _, err := os.Lstat(w + "/runs/old-run-" + m.Name); !os.IsNotExist(err) {
			t.Errorf("member %s: old run dir: %v; want it gone", m.Name, err)
		}
		if _, err := os.Stat(filepath.Join(m.MemberDir(), "outside-"+m.Name, "f")); err != nil {
			t.Errorf("member %s: behind the planted link: %v; want it kept", m.Name, err)
		}
	}
}
