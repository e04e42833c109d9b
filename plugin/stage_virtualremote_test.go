package plugin_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/remotehost"
)

// TestPluginStagesOnVirtualRemote: the plugin's StageWorkspaceSnapshot,
// run in process against the virtual remote, publishes the snapshot, then
// reuses it.
func TestPluginStagesOnVirtualRemote(t *testing.T) {
	fsys, err := remotefs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.MkdirAll("/var/tmp/pikaci/snapshots/h-1"); err != nil {
		t.Fatal(err)
	}
	h, err := remotehost.Start(t.Context(), fsys, remotehost.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	cfg, err := h.WriteClientFiles(t.TempDir(), "vm-host")
	if err != nil {
		t.Fatal(err)
	}
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "snap")
	for p, body := range map[string]string{
		shared.SnapshotMarker:  `{"content_hash":"h-1"}`,
		`src "q"/it's here.rs`: "fn main() {}\n",
		"build.sh":             "#!/bin/sh\n",
	} {
		full := filepath.Join(local, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(local, "build.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("build.sh", filepath.Join(local, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(local, "zz fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	job := shared.WholeJob{JobSpec: shared.JobSpec{
		Job:    shared.Job{ID: "job 1", Staged: true},
		Host:   shared.HostPaths{JobDir: "/tmp/run/jobs/job 1", SnapshotContentHash: "h-1", SnapshotDir: local},
		Remote: shared.Remote{Host: "vm-host", WorkDir: "/var/tmp/pikaci"},
	}}
	dir := "/var/tmp/pikaci/snapshots/h-1/snapshot"

	// A FIFO in the snapshot cuts the stream part way: nothing is
	// published and the temporary dir is gone.
	if _, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job}); err == nil || !strings.Contains(err.Error(), "zz fifo") {
		t.Fatalf("stage of a snapshot with a FIFO: %v, want an error naming it", err)
	}
	if ents, err := fsys.ReadDir("/var/tmp/pikaci/snapshots/h-1"); err != nil || len(ents) != 0 {
		t.Errorf("after a failed stage the snapshot's parent holds %v (%v), want nothing", ents, err)
	}
	if err := os.Remove(filepath.Join(local, "zz fifo")); err != nil {
		t.Fatal(err)
	}

	res, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.BytesSent == 0 || res.SnapshotDir != dir {
		t.Errorf("result %+v", res)
	}
	want := map[string]string{
		shared.SnapshotMarker:  `-rw-r--r-- {"content_hash":"h-1"}`,
		`src "q"`:              "drwxr-xr-x",
		`src "q"/it's here.rs`: "-rw-r--r-- fn main() {}\n",
		"build.sh":             "-rwxr-xr-x #!/bin/sh\n",
		"link":                 "link build.sh",
	}
	if diff := cmp.Diff(want, remoteModes(t, fsys, dir)); diff != "" {
		t.Errorf("remote snapshot (-want +got):\n%s", diff)
	}
	ents, err := fsys.ReadDir("/var/tmp/pikaci/snapshots/h-1")
	if err != nil || len(ents) != 1 {
		t.Errorf("the snapshot's parent holds %v (%v), want the snapshot alone", ents, err)
	}
	h.ResetCommands()
	again, err := e.StageWorkspaceSnapshot(t.Context(), shared.StageRequest{Job: job})
	if err != nil || !again.Reused || again.BytesSent != 0 {
		t.Errorf("second stage: %+v, %v; want reused", again, err)
	}
	if n := len(h.Commands()); n != 1 {
		t.Errorf("second stage ran %d commands, want 1: %q", n, h.Commands())
	}
}

func remoteModes(tb testing.TB, fsys *remotefs.FS, p string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	var walk func(string)
	walk = func(dir string) {
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range ents {
			q := dir + "/" + e.Name()
			fi, err := fsys.Lstat(q)
			if err != nil {
				tb.Fatal(err)
			}
			rel := strings.TrimPrefix(q, p+"/")
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				t, _ := fsys.Readlink(q)
				out[rel] = "link " + t
			case fi.IsDir():
				out[rel] = fi.Mode().String()
				walk(q)
			default:
				b, _ := fsys.ReadFile(q)
				out[rel] = fi.Mode().String() + " " + string(b)
			}
		}
	}
	walk(p)
	return out
}
