package plugin_test

// CollectArtifacts against a real LXD: special files are listed with one
// exec first and never read through the file API (on LXD 5.0 an abandoned
// GET of a FIFO makes the next force stop fail and the delete hang).

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

func TestCollectArtifactsSkipsFIFOsWithoutReadingThem(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Artifacts = &shared.Artifacts{Path: "/out"}
	l, _ := layout.Derive(job.JobSpec)
	t.Cleanup(func() { os.RemoveAll(job.Host.JobDir) })
	w.prepare(t, job)
	code, out := w.guest(t, l.Instance, "sh", "-c", `mkdir -p "/out/sub dir" && echo kept > "/out/it's a file" && mkfifo /out/pipe "/out/sub dir/fifo two" && ln -s /out/pipe /out/link-to-pipe`)
	if code != 0 {
		t.Fatalf("guest setup: exit %d: %s", code, out)
	}
	res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"/out/pipe"`, `"/out/sub dir/fifo two"`} {
		if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, name) && strings.Contains(w, "FIFO") }) {
			t.Errorf("no warning names the FIFO %s: %q", name, res.Warnings)
		}
	}
	dest := filepath.Join(job.Host.JobDir, "artifacts")
	want := map[string]string{
		".":            "dir -rwxr-xr-x",
		"it's a file":  "file -rw-r--r-- " + sha8("kept\n"),
		"link-to-pipe": "link -> pipe",
		"sub dir":      "dir -rwxr-xr-x",
	}
	if diff := cmp.Diff(want, treeOf(t, dest)); diff != "" {
		t.Errorf("collected (-want +got):\n%s", diff)
	}
	// Nothing blocked the server: the instance goes at once.
	res2, err := w.e.Cleanup(t.Context(), shared.CleanupRequest{Job: job})
	if err != nil || !res2.Deleted {
		t.Fatalf("Cleanup after collecting FIFOs: %+v, %v", res2, err)
	}
	if _, err := w.lxd.Instance(t.Context(), wholeJobProject, l.Instance); !errors.Is(err, shared.ErrNotFound) {
		t.Errorf("instance left: %v", err)
	}
}

// A guest without sh: the special files cannot be listed, so no file may be
// read (a FIFO read would block the instance): the collection cannot run,
// an ErrUnavailable error (issue 17.1 and 17.2), never a partial success.
func TestCollectArtifactsWithoutShellIsASystemFailure(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	job.Artifacts = &shared.Artifacts{Path: "/out"}
	l, _ := layout.Derive(job.JobSpec)
	t.Cleanup(func() { os.RemoveAll(job.Host.JobDir) })
	w.prepare(t, job)
	if code, out := w.guest(t, l.Instance, "sh", "-c", `mkdir /out && echo x > /out/a`); code != 0 {
		t.Fatalf("guest setup: exit %d: %s", code, out)
	}
	if code, out := w.guest(t, l.Instance, "busybox", "rm", "/bin/sh"); code != 0 {
		t.Fatalf("guest setup: exit %d: %s", code, out)
	}
	res, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "could not list the special files") {
		t.Errorf("CollectArtifacts = %+v, %v; want ErrUnavailable saying the special files could not be listed", res, err)
	}
}

// sha8 is the content hash treeOf shows.
func sha8(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}
