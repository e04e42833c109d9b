package plugin

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/incusfake"
)

func TestEmptyDirCommandQuotesAndEmpties(t *testing.T) {
	work := t.TempDir()
	dir := work + "/runs/r/jobs/it's a job/artifacts"
	cmd := emptyDirCommand(work, dir)
	if !strings.Contains(cmd, `'`+strings.ReplaceAll(dir, `'`, `'"'"'`)+`'`) {
		t.Fatalf("command %q does not quote %q", cmd, dir)
	}
	// Run it twice: on a missing dir, then on one with content.
	for range 2 {
		if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
		if out, err := exec.Command("bash", "-c", "mkdir -p \"$0/sub dir\" && touch \"$0/.hidden\" \"$0/sub dir/f\"", dir).CombinedOutput(); err != nil {
			t.Fatalf("fill: %v: %s", err, out)
		}
	}
	if out, err := exec.Command("bash", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	out, err := exec.Command("ls", "-A", dir).Output()
	if err != nil || len(out) != 0 {
		t.Errorf("dir after emptying: %q, %v", out, err)
	}
}

// A link planted on the way to the artifacts dir (jobs/<job> -> another
// tree) is refused, naming where it leads; nothing there is removed or
// made. A work dir that is itself a link is fine.
func TestEmptyDirCommandRefusesALinkOnTheWay(t *testing.T) {
	base := t.TempDir()
	work, victim := base+"/work", base+"/victim"
	for _, d := range []string{work + "/runs/r/jobs", victim + "/artifacts/precious"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(victim, work+"/runs/r/jobs/j"); err != nil {
		t.Fatal(err)
	}
	dir := work + "/runs/r/jobs/j/artifacts"
	out, err := exec.Command("bash", "-c", emptyDirCommand(work, dir)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), dir+" resolves to "+victim+"/artifacts, not to "+work+"/runs/r/jobs/j/artifacts: a link on the way") {
		t.Errorf("through a planted link: %v, %s; want a refusal naming it", err, out)
	}
	if _, err := os.Stat(victim + "/artifacts/precious"); err != nil {
		t.Errorf("the victim's dir after the refusal: %v", err)
	}

	gone := base + "/no work dir"
	out, err = exec.Command("bash", "-c", emptyDirCommand(gone, gone+"/runs/r/jobs/j/artifacts")).CombinedOutput()
	if err == nil || string(out) != "the work dir "+gone+" does not exist\n" {
		t.Errorf("without a work dir: %v, %q; want it named", err, out)
	}

	linked := base + "/linked-work"
	if err := os.Symlink(work, linked); err != nil {
		t.Fatal(err)
	}
	ok := linked + "/runs/r/jobs/fine/artifacts"
	if out, err := exec.Command("bash", "-c", emptyDirCommand(linked, ok)).CombinedOutput(); err != nil {
		t.Errorf("a work dir that is a link: %v, %s", err, out)
	}
	if fi, err := os.Stat(work + "/runs/r/jobs/fine/artifacts"); err != nil || !fi.IsDir() {
		t.Errorf("artifacts dir below a linked work dir: %v", err)
	}
}

func TestSweepVictims(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339) }
	list := []incus.InstanceInfo{
		{Name: "b-old", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "1", shared.LabelCreated: at(2 * time.Hour)}},
		{Name: "a-old", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "2", shared.LabelCreated: at(3 * time.Hour)}},
		{Name: "live", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "3", shared.LabelCreated: at(3 * time.Hour)}},
		{Name: "young", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "4", shared.LabelCreated: at(time.Minute)}},
		{Name: "exactly-the-age", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "5", shared.LabelCreated: at(time.Hour)}},
		{Name: "undated", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "6"}},
		{Name: "bad-date", Config: map[string]string{shared.LabelRun: "r", shared.LabelJob: "7", shared.LabelCreated: "last week"}},
		{Name: "unlabelled", Config: map[string]string{shared.LabelJob: "8", shared.LabelCreated: at(9 * time.Hour)}},
		{Name: "no-config"},
	}
	got := SweepVictims(list, []string{"r:3", "other:1"}, time.Hour, now)
	if diff := cmp.Diff([]string{"a-old", "b-old"}, got); diff != "" {
		t.Errorf("victims (-want +got):\n%s", diff)
	}
}

func TestWaitReadyTimesOutNamingTheInstance(t *testing.T) {
	d := lxdtest.Shared(t)
	d.BusyboxImage(t)
	c := incus.NewUnix(d.Socket)
	defer c.Close()
	ctx := t.Context()
	// A stopped instance never accepts an exec.
	const name = "never-ready"
	if err := c.CreateInstance(ctx, "default", incus.CreateRequest{Name: name, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c.DeleteInstance(ctx, "default", name)
	})
	err := waitReady(ctx, c, "default", name, 1500*time.Millisecond)
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Fatalf("error kind %v, want ErrUnavailable: %v", shared.KindOf(err), err)
	}
	for _, want := range []string{`"never-ready"`, "waited ", "not running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// fakeWithFIFOs serves a fake Incus whose instance c1 has FIFOs at
// /etc/passwd and /work/pipe (and /work/link to it): a file API read of
// one never answers.
func fakeWithFIFOs(t *testing.T) *incus.Client {
	t.Helper()
	fake := incusfake.New(incusfake.Options{})
	fake.AddInstance("default", "c1", incus.TypeContainer, nil)
	g := fake.Guest("default", "c1")
	for _, err := range []error{
		g.MkdirAll("/etc"), g.Mkfifo("/etc/passwd", 0o644),
		g.MkdirAll("/work"), g.Mkfifo("/work/pipe", 0o644), g.Symlink("/work/pipe", "/work/link"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "incusfake-") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "unix.socket")
	ts, err := fake.StartUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.Close()
		os.RemoveAll(dir)
	})
	t.Cleanup(fake.Shutdown) // before the server closes: ends what waits on a FIFO
	c := incus.NewUnix(sock)
	t.Cleanup(c.Close)
	return c
}

// RunJob's checks before the job starts read the guest through the file
// API; a FIFO there must not hang them: each gives up after
// guestFileTimeout with an error naming the path.
func TestRunJobChecksGiveUpOnAFIFO(t *testing.T) {
	c := fakeWithFIFOs(t)
	old := guestFileTimeout
	guestFileTimeout = 100 * time.Millisecond
	t.Cleanup(func() { guestFileTimeout = old })
	ctx := t.Context()

	for _, cwd := range []string{"/work/pipe", "/work/link"} {
		err := checkCwd(ctx, c, "default", "c1", cwd)
		if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), `"/work/pipe" did not answer`) || !strings.Contains(err.Error(), cwd) {
			t.Errorf("checkCwd(%s) = %v; want ErrUnavailable naming /work/pipe", cwd, err)
		}
		var e *shared.Error
		if !errors.As(err, &e) || e.Field != "command.cwd" {
			t.Errorf("checkCwd(%s): field of %v is not command.cwd", cwd, err)
		}
	}
	_, _, err := userEnv(ctx, c, "default", "c1", shared.Command{User: 1000})
	if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), `"/etc/passwd" did not answer`) {
		t.Errorf("userEnv = %v; want ErrUnavailable naming /etc/passwd", err)
	}
	// A cancellation is the caller's, not a FIFO's.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := checkCwd(cctx, c, "default", "c1", "/work/pipe"); err == nil || strings.Contains(err.Error(), "did not answer") {
		t.Errorf("checkCwd after a cancellation = %v; want the cancellation", err)
	}
}

// On LXD a file API read of a FIFO given up on goes on in the server and
// makes the instance's force stop time out; the checks end it through the
// server, with no program of the guest's (this guest has no sh), so the
// instance can still be cleaned up.
func TestRunJobChecksOnAFIFOLeaveTheInstanceDeletable(t *testing.T) {
	d := lxdtest.Shared(t)
	d.BusyboxImage(t)
	c := incus.NewUnix(d.Socket)
	t.Cleanup(c.Close) // after the instance's deletion
	ctx := t.Context()
	const name = "fifo-checks"
	if err := c.CreateInstance(ctx, "default", incus.CreateRequest{Name: name, Type: incus.TypeContainer, Alias: lxdtest.ImageAlias, Profiles: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c.DeleteInstance(ctx, "default", name)
	})
	if err := c.Start(ctx, "default", name); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	code, err := c.Exec(ctx, "default", name, incus.ExecRequest{Command: []string{"sh", "-c", "mkfifo /pipe && echo kept > /kept && rm /etc/passwd && mkfifo /etc/passwd && for d in /bin /sbin /usr/bin /usr/sbin; do busybox rm -f $d/sh; done"}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		t.Fatalf("guest setup: %d, %v: %s", code, err, out.String())
	}
	// What ends a read given up on leaves a regular file as it is.
	unblockRead(ctx, c, "default", name, "/kept")
	out.Reset()
	if code, err := c.Exec(ctx, "default", name, incus.ExecRequest{Command: []string{"busybox", "cat", "/kept"}, Stdout: &out, Stderr: &out}); err != nil || code != 0 || out.String() != "kept\n" {
		t.Errorf("/kept after unblockRead: %d, %v, %q; want it untouched", code, err, out.String())
	}
	old := guestFileTimeout
	guestFileTimeout = time.Second
	t.Cleanup(func() { guestFileTimeout = old })

	if err := checkCwd(ctx, c, "default", name, "/pipe"); !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), `"/pipe" did not answer`) {
		t.Errorf("checkCwd = %v; want ErrUnavailable naming /pipe", err)
	}
	if _, _, err := userEnv(ctx, c, "default", name, shared.Command{User: 1000}); !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), `"/etc/passwd" did not answer`) {
		t.Errorf("userEnv = %v; want ErrUnavailable naming /etc/passwd", err)
	}
	// Unblocked, the force stop is prompt; stuck, it fails after 30 s.
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if deleted, err := c.DeleteInstance(dctx, "default", name); err != nil || !deleted {
		t.Errorf("delete after the checks gave up: %v, %v", deleted, err)
	}
}
