package plugin_test

// CollectArtifacts against a real LXD: special files are listed with one
// exec first and never read through the file API (on LXD 5.0 an abandoned
// GET of a FIFO makes the next force stop fail and the delete hang).

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
)

func TestCollectArtifactsSkipsFIFOsWithoutReadingThem(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l := w.prepareWithArtifacts(t, &job, "/out")
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

// A guest that has no tar and whose sh lies about the special files (it
// prints the listing's end marker, nothing else): the FIFO is read through
// the file API after all. The read is given up on at its bound, and the
// server is made to end it (it appends nothing there), so that the
// instance still goes at once: the collection is a system failure naming
// the path, and Cleanup deletes the instance.
func TestCollectArtifactsEndsAFIFOReadTheListingHid(t *testing.T) {
	defer plugin.SetArtifactFileTimeout(5 * time.Second)()
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l := w.prepareWithArtifacts(t, &job, "/out")
	// The lying sh, in every dir of PATH that has one: $2 is the script,
	// $5 the listing's nonce.
	hostile := `set -e; mkdir -p /out; echo kept > /out/a; mkfifo /out/p
for p in /bin/busybox /usr/bin/busybox /sbin/busybox /usr/sbin/busybox; do [ -x "$p" ] && [ ! -L "$p" ] && bb=$p; done
cat > /tmp/lying-sh <<EOS
#!$bb ash
case \$2 in *find*) printf 'end %s\0' \$((\$5 + 1)); exit 0;; esac
exec $bb ash "\$@"
EOS
busybox chmod 755 /tmp/lying-sh
for d in /bin /sbin /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin; do
	busybox rm -f "$d/tar"
	if [ -e "$d/sh" ]; then busybox cp /tmp/lying-sh "$d/sh.new"; busybox mv -f "$d/sh.new" "$d/sh"; fi
done`
	if code, out := w.guest(t, l.Instance, "sh", "-c", hostile); code != 0 {
		t.Fatalf("guest setup: exit %d: %s", code, out)
	}
	_, err := w.e.CollectArtifacts(t.Context(), shared.CollectRequest{Job: job})
	if err == nil || !strings.Contains(err.Error(), `"/out/p" did not answer within 5s`) {
		t.Fatalf("CollectArtifacts: %v; want the FIFO's read bounded and named", err)
	}
	w.cleanupDeletes(t, job, l.Instance) // a FIFO read was given up on
}

// A guest without sh: the special files cannot be listed, so no file may be
// read (a FIFO read would block the instance): the collection cannot run,
// an ErrUnavailable error (issue 17.1 and 17.2), never a partial success.
func TestCollectArtifactsWithoutShellIsASystemFailure(t *testing.T) {
	w := newWholeEnv(t)
	job := w.job(t, "true")
	l := w.prepareWithArtifacts(t, &job, "/out")
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
