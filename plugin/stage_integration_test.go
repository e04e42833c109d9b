package plugin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// writeSnapshot makes a local snapshot whose marker names hash: names with
// spaces and quotes, a symlink, an executable, and extra files.
func writeSnapshot(tb testing.TB, dir, hash string, extra int) {
	tb.Helper()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	sub := filepath.Join(dir, `src "quoted"`, "it's here")
	must(os.MkdirAll(sub, 0o755))
	must(os.WriteFile(filepath.Join(dir, shared.SnapshotMarker), []byte(fmt.Sprintf(`{"content_hash":%q,"created":"2026-11-28"}`, hash)), 0o644))
	must(os.WriteFile(filepath.Join(sub, "main file.rs"), []byte("fn main() {}\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "build.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755))
	must(os.Symlink(`src "quoted"/it's here/main file.rs`, filepath.Join(dir, "main link")))
	for i := range extra {
		must(os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), []byte(strings.Repeat("x", i%100)), 0o644))
	}
}

// treeOf describes every entry under dir: type, permission bits, content
// hash or link target.
func treeOf(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link -> " + t
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %v %s", fi.Mode(), hex.EncodeToString(sum[:8]))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// tempDirsIn lists the transfer's temporary dirs left in parent.
func tempDirsIn(tb testing.TB, parent string) []string {
	tb.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		tb.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".pikaci-sync-snapshot-") {
			left = append(left, e.Name())
		}
	}
	return left
}

type stageFixture struct {
	srv  *sshdtest.Server
	e    *plugin.Executor
	work string
}

func newStageFixture(t *testing.T) *stageFixture {
	t.Helper()
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	return &stageFixture{srv: srv, e: e, work: filepath.Join(t.TempDir(), "ci work", "it's here")}
}

// job is a whole job whose snapshot is local and whose hash is hash.
func (f *stageFixture) job(t *testing.T, local, hash string) shared.WholeJob {
	t.Helper()
	spec := e2eSpec(t, f.work, "/nonexistent")
	spec.Host.StagedPayloads = nil
	spec.Host.SnapshotContentHash = hash
	spec.Host.SnapshotDir = local
	return shared.WholeJob{JobSpec: spec}
}

func snapshotDirOf(t *testing.T, j shared.WholeJob) string {
	t.Helper()
	l, err := layout.Derive(j.JobSpec)
	if err != nil {
		t.Fatal(err)
	}
	return l.SnapshotDir
}

// TestStageRealSSHD stages a snapshot through a real sshd: the remote copy
// equals the local tree; the same hash again sends nothing; a marker that
// disagrees is refused and nothing is overwritten.
func TestStageRealSSHD(t *testing.T) {
	f := newStageFixture(t)
	ctx := t.Context()
	local := filepath.Join(t.TempDir(), "local snap")
	writeSnapshot(t, local, "h1", 10)
	job := f.job(t, local, "h1")
	dir := snapshotDirOf(t, job)

	sessions := f.srv.Sessions()
	res, err := f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.BytesSent <= 0 || res.SnapshotDir != dir || res.ContentHash != "h1" {
		t.Errorf("first stage: %+v, want sent to %s", res, dir)
	}
	if got := f.srv.Sessions() - sessions; got != 3 {
		t.Errorf("first stage ran %d sessions, want 3 (marker, transfer, publish)", got)
	}
	if diff := cmp.Diff(treeOf(t, local), treeOf(t, dir)); diff != "" {
		t.Errorf("remote snapshot differs from the local one (-local +remote):\n%s", diff)
	}
	if left := tempDirsIn(t, filepath.Dir(dir)); len(left) != 0 {
		t.Errorf("temporary dirs left: %q", left)
	}

	// The same hash again, as another job: reused, one session, nothing sent.
	sessions = f.srv.Sessions()
	again, err := f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: f.job(t, local, "h1")})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused || again.BytesSent != 0 {
		t.Errorf("second stage: %+v, want reused with 0 bytes sent", again)
	}
	if got := f.srv.Sessions() - sessions; got != 1 {
		t.Errorf("second stage ran %d sessions, want 1 (the marker read)", got)
	}

	// The job names a hash its local snapshot does not have: refused
	// before any session.
	sessions = f.srv.Sessions()
	_, err = f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: f.job(t, local, "h2")})
	if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), `"h2"`) || !strings.Contains(err.Error(), `"h1"`) {
		t.Errorf("local mismatch: error %v, want invalid input naming h1 and h2", err)
	}
	if got := f.srv.Sessions() - sessions; got != 0 {
		t.Errorf("a refused stage ran %d sessions", got)
	}

	// The remote marker disagrees with the local hash: refused, nothing
	// overwritten, nothing left behind.
	if err := os.WriteFile(filepath.Join(dir, shared.SnapshotMarker), []byte(`{"content_hash":"other"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treeOf(t, filepath.Dir(dir))
	for _, dry := range []bool{true, false} {
		_, err = f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: f.job(t, local, "h1"), DryRun: dry})
		if !errors.Is(err, shared.ErrConflict) || !strings.Contains(err.Error(), `"other"`) || !strings.Contains(err.Error(), `"h1"`) || !strings.Contains(err.Error(), dir) {
			t.Errorf("remote mismatch (dry run %t): error %v, want a conflict naming %s, other and h1", dry, err, dir)
		}
	}
	if diff := cmp.Diff(before, treeOf(t, filepath.Dir(dir))); diff != "" {
		t.Errorf("a refused stage changed the remote (-before +after):\n%s", diff)
	}
}

// TestStageDryRunSendsNothing: a dry run reads the markers and creates
// nothing.
func TestStageDryRunSendsNothing(t *testing.T) {
	f := newStageFixture(t)
	local := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, local, "dry", 0)
	job := f.job(t, local, "dry")
	res, err := f.e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.BytesSent != 0 || !res.DryRun {
		t.Errorf("dry run: %+v", res)
	}
	if _, err := os.Lstat(filepath.Dir(snapshotDirOf(t, job))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dry run created the snapshot's parent: %v", err)
	}
}

// TestStageConcurrentSendsOnce: two jobs of one runner stage one hash at
// the same time; it is sent once.
func TestStageConcurrentSendsOnce(t *testing.T) {
	f := newStageFixture(t)
	local := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, local, "shared-hash", 200)
	jobs := []shared.WholeJob{f.job(t, local, "shared-hash"), f.job(t, local, "shared-hash")}
	sessions := f.srv.Sessions()
	results := make([]shared.StageResult, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			results[i], errs[i] = f.e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: jobs[i]})
		})
	}
	wg.Wait()
	sent := 0
	for i := range jobs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !results[i].Reused {
			sent++
		}
	}
	if sent != 1 {
		t.Errorf("results %+v: the snapshot was sent %d times, want once", results, sent)
	}
	if got := f.srv.Sessions() - sessions; got != 4 {
		t.Errorf("%d sessions, want 4 (one stage of 3, one marker read)", got)
	}
	if diff := cmp.Diff(treeOf(t, local), treeOf(t, snapshotDirOf(t, jobs[0]))); diff != "" {
		t.Errorf("remote snapshot differs (-local +remote):\n%s", diff)
	}
}

// TestStageFailureLeavesNothing: a snapshot that holds a FIFO fails part
// way through the stream, and a cancelled stage ends part way through; both
// leave no temporary dir and no snapshot dir.
func TestStageFailureLeavesNothing(t *testing.T) {
	f := newStageFixture(t)

	t.Run("fifo", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "snap")
		writeSnapshot(t, local, "fifo", 100)
		fifo := filepath.Join(local, "zz pipe")
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		job := f.job(t, local, "fifo")
		dir := snapshotDirOf(t, job)
		_, err := f.e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
		if err == nil || !strings.Contains(err.Error(), fifo) {
			t.Fatalf("error %v, want one naming %s", err, fifo)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("snapshot dir after a failed stage: %v", err)
		}
		if left := tempDirsIn(t, filepath.Dir(dir)); len(left) != 0 {
			t.Errorf("temporary dirs left: %q", left)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "snap")
		writeSnapshot(t, local, "cancel", 600)
		job := f.job(t, local, "cancel")
		dir := snapshotDirOf(t, job)
		// The context ends after WriteTar checked it 300 times: in the
		// middle of the stream, whatever the machine's speed.
		ctx := newCountdownContext(t.Context(), 300)
		_, err := f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("snapshot dir after a cancelled stage: %v", err)
		}
		if left := tempDirsIn(t, filepath.Dir(dir)); len(left) != 0 {
			t.Errorf("temporary dirs left: %q", left)
		}
		// The same job then stages fine.
		if _, err := f.e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job}); err != nil {
			t.Fatal(err)
		}
	})
}

// countdownContext is cancelled on the n-th call of Err that finds it live.
type countdownContext struct {
	context.Context
	left atomic.Int64
	done chan struct{}
	once sync.Once
}

func newCountdownContext(parent context.Context, n int64) *countdownContext {
	c := &countdownContext{Context: parent, done: make(chan struct{})}
	c.left.Store(n)
	return c
}

func (c *countdownContext) Done() <-chan struct{} { return c.done }

func (c *countdownContext) Err() error {
	if c.left.Add(-1) < 0 {
		c.once.Do(func() { close(c.done) })
		return context.Canceled
	}
	return nil
}

// localhostStage is a plugin and a job that stages a new local snapshot
// of hash (writeSnapshot's, with extra files) to localhost, whose
// commands run in a local bash; local is the snapshot.
func localhostStage(t *testing.T, hash string, extra int) (e *plugin.Executor, job shared.WholeJob, local string) {
	t.Helper()
	e = plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	local = filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, local, hash, extra)
	spec := e2eSpec(t, filepath.Join(t.TempDir(), "work dir"), "/nonexistent")
	spec.Remote.Host = "localhost"
	spec.Host.StagedPayloads = nil
	spec.Host.SnapshotContentHash = hash
	spec.Host.SnapshotDir = local
	return e, shared.WholeJob{JobSpec: spec}, local
}

// TestStageLocalhost: for localhost the same commands run in a local bash.
func TestStageLocalhost(t *testing.T) {
	e, job, local := localhostStage(t, "loc", 5)
	res, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.BytesSent == 0 {
		t.Errorf("result %+v", res)
	}
	if diff := cmp.Diff(treeOf(t, local), treeOf(t, res.SnapshotDir)); diff != "" {
		t.Errorf("staged snapshot differs (-local +staged):\n%s", diff)
	}
	again, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
	if err != nil || !again.Reused {
		t.Errorf("second stage: %+v, %v; want reused", again, err)
	}
}

// A remote tar that exits 0 before it read the whole stream (here: it
// reads 4 KiB, extracts that, and says nothing) leaves a cut snapshot in
// the temporary dir: it is refused, never published, and removed; the
// next stage sends the snapshot again (and the end entry is not in it).
func TestStagePublishesNothingWhenTheRemoteTarStopsEarly(t *testing.T) {
	tar, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar here")
	}
	bin := t.TempDir()
	fake := "#!/bin/sh\nhead -c 4096 | " + layout.Quote(tar) + " \"$@\" 2>/dev/null\nexit 0\n"
	if err := os.WriteFile(filepath.Join(bin, "tar"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	// A stream larger than the pipe to the remote: its writer is still
	// blocked when the remote ends. One that fits: the writer is done
	// first, and only the stream's last entry, missing, tells.
	for _, tc := range []struct {
		name  string
		extra int
	}{{"larger than the pipe", 300}, {"within the pipe", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			e, job, local := localhostStage(t, fmt.Sprintf("cut-%d", tc.extra), tc.extra)
			dir := snapshotDirOf(t, job)

			path := os.Getenv("PATH")
			t.Setenv("PATH", bin+string(os.PathListSeparator)+path)
			_, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
			if err == nil || !strings.Contains(err.Error(), "the snapshot stream was cut short") {
				t.Fatalf("error %v, want the cut stream named", err)
			}
			if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("snapshot dir after a cut stream: %v; want none", err)
			}
			if left := tempDirsIn(t, filepath.Dir(dir)); len(left) != 0 {
				t.Errorf("temporary dirs left: %q", left)
			}

			t.Setenv("PATH", path)
			res, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
			if err != nil || res.Reused {
				t.Fatalf("stage with a real tar: %+v, %v; want it sent", res, err)
			}
			if diff := cmp.Diff(treeOf(t, local), treeOf(t, res.SnapshotDir)); diff != "" {
				t.Errorf("staged snapshot differs (-local +staged):\n%s", diff)
			}
		})
	}
}

// A remote marker of 2 MiB (a link to a huge file, say) is refused having
// read one byte past a marker's limit, not drained whole.
func TestStageReadsAnOversizedRemoteMarkerOnlyToItsLimit(t *testing.T) {
	e, job, _ := localhostStage(t, "big", 1)
	dir := snapshotDirOf(t, job)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, shared.SnapshotMarker), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
	if want := fmt.Sprintf("%d bytes, more than the %d a marker may have", 1<<20+1, 1<<20); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v; want one containing %q", err, want)
	}
}

// A remote snapshot dir that resolves outside the work dir (a symlink
// planted at snapshots/<hash>, pointing at a tree with a matching marker)
// is refused like any other path that leaves its root, not reused; a work
// dir that is itself a symlink stays fine.
func TestStageRefusesASnapshotDirLinkedOutOfTheWorkDir(t *testing.T) {
	f := newStageFixture(t)
	ctx := t.Context()
	local := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, local, "hl", 0)
	job := f.job(t, local, "hl")
	dir := snapshotDirOf(t, job)
	outside := filepath.Join(t.TempDir(), "elsewhere")
	writeSnapshot(t, filepath.Join(outside, "snapshot"), "hl", 0)
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{true, false} {
		res, err := f.e.StageWorkspaceSnapshot(ctx, shared.StageRequest{Job: job, DryRun: dry})
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), outside) {
			t.Errorf("dry run %t: result %+v, error %v; want it refused naming %s and where it leads", dry, res, err, dir)
		}
	}
}
