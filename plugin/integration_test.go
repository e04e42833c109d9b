package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/lxdcluster"
	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

func TestMain(m *testing.M) {
	code := lxdcluster.Around(func() int { return lxdtest.Main(m) })
	testbin.RemoveAll()
	os.Exit(code)
}

var jobSeq atomic.Int64

// e2eSpec is a staged job whose remote is a real sshd on loopback and whose
// Incus API is a real LXD daemon's socket, reached through that sshd.
func e2eSpec(tb testing.TB, workDir, socket string) shared.JobSpec {
	tb.Helper()
	job := fmt.Sprintf("job-%d-%d", os.Getpid(), jobSeq.Add(1))
	local := "/tmp/pikaci-e2e/run-1/jobs/" + job
	return shared.JobSpec{
		Job: shared.Job{ID: job, Staged: true},
		Host: shared.HostPaths{
			JobDir:              local,
			SnapshotContentHash: "abc123",
			StagedPayloads: []shared.StagedPayload{
				{Name: "workspace-deps", LocalDir: local + "/staged-linux-rust/workspace-deps"},
				{Name: "workspace-build", LocalDir: local + "/staged-linux-rust/workspace-build"},
			},
		},
		Remote: shared.Remote{
			Host:    "vm-host",
			WorkDir: workDir,
			Incus:   shared.Incus{Project: "default", Endpoint: "unix://" + socket},
		},
	}
}

func writeManifest(tb testing.TB, root string, mounts ...devices.Mount) {
	tb.Helper()
	data := `{"schema_version":1,"kind":"test","mounts":[`
	for i, m := range mounts {
		if i > 0 {
			data += ","
		}
		data += fmt.Sprintf(`{"name":%q,"relative_path":%q,"guest_path":%q,"read_only":%t}`, m.Name, m.RelativePath, m.GuestPath, m.ReadOnly)
	}
	data += "]}"
	p := filepath.Join(root, devices.ManifestPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// createContainer makes an empty container with the given name in LXD.
func createContainer(tb testing.TB, d *lxdtest.Daemon, name string, extra shared.Devices) {
	tb.Helper()
	devs := shared.Devices{"root": {"type": "disk", "path": "/", "pool": lxdtest.Pool}}
	for k, v := range extra {
		devs[k] = v
	}
	ctx := context.Background()
	if _, err := d.Do(ctx, http.MethodPost, "/1.0/instances?project=default", map[string]any{
		"name": name, "type": "container", "source": map[string]string{"type": "none"}, "devices": devs,
	}); err != nil {
		tb.Fatalf("create container %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if _, err := d.Do(context.Background(), http.MethodDelete, "/1.0/instances/"+url.PathEscape(name)+"?project=default", nil); err != nil {
			tb.Errorf("delete container %s: %v", name, err)
		}
	})
}

// TestEndToEndRealSSHDAndLXD runs both phases of a staged job with the real
// plugin code against a real OpenSSH sshd and a real LXD daemon whose socket
// is reached through the sshd's streamlocal forwarding.
func TestEndToEndRealSSHDAndLXD(t *testing.T) {
	sshdtest.Require(t)
	d := lxdtest.Shared(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	ctx := t.Context()

	work := filepath.Join(t.TempDir(), "ci work", "it's here")
	spec := e2eSpec(t, work, d.Socket)
	l, err := layout.Derive(spec)
	if err != nil {
		t.Fatal(err)
	}

	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(ctx, shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}

	// PrepareDirectories: the directories exist afterwards, made by one session.
	sessions := srv.Sessions()
	prep, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Sessions() - sessions; got != 1 {
		t.Errorf("PrepareDirectories ran %d sessions, want 1", got)
	}
	for _, dir := range prep.Directories {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("directory %s missing after PrepareDirectories: %v", dir, err)
		}
	}

	// The job's payloads: the build root is a symlink into a store, with a
	// read-write sub-mount.
	if err := os.MkdirAll(l.SnapshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	deps, build := l.Payloads[0].RemoteDir, l.Payloads[1].RemoteDir
	writeManifest(t, deps, devices.Mount{Name: "workspace_deps_root", RelativePath: ".", GuestPath: "/staged/linux-rust/workspace-deps", ReadOnly: true})
	store := filepath.Join(work, "store", "0f3k9q-workspace-build")
	writeManifest(t, store,
		devices.Mount{Name: "workspace_build_root", RelativePath: ".", GuestPath: "/staged/linux-rust/workspace-build", ReadOnly: true},
		devices.Mount{Name: "cache", RelativePath: "target/cache", GuestPath: "/staged/cache"},
	)
	if err := os.MkdirAll(filepath.Join(store, "target", "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(build); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(store, build); err != nil {
		t.Fatal(err)
	}

	keep := shared.Devices{"keep-me": {"type": "none"}}
	createContainer(t, d, l.Instance, keep)
	before, err := d.Get(ctx, "default", l.Instance)
	if err != nil {
		t.Fatal(err)
	}

	// Dry run: the device map as it would be; the instance unchanged.
	dry, err := e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := d.Get(ctx, "default", l.Instance); now.ETag != before.ETag || !cmp.Equal(now.Devices, before.Devices) {
		t.Errorf("dry run changed the instance:\n%s", cmp.Diff(before.Devices, now.Devices))
	}

	res, err := e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	want := shared.Devices{
		"root":    {"type": "disk", "path": "/", "pool": lxdtest.Pool},
		"keep-me": {"type": "none"},
		devices.SnapshotDeviceName(l.SnapshotDir, devices.SnapshotGuestPath): {"type": "disk", "source": l.SnapshotDir, "path": "/workspace/snapshot", "readonly": "true", "shift": "false"},
		"pk-workspac-b966dd7a": {"type": "disk", "source": deps, "path": "/staged/linux-rust/workspace-deps", "readonly": "true", "shift": "false"},
		"pk-workspac-51fa7376": {"type": "disk", "source": store, "path": "/staged/linux-rust/workspace-build", "readonly": "true", "shift": "false"},
		"pk-workspac-c269a483": {"type": "disk", "source": filepath.Join(store, "target", "cache"), "path": "/staged/cache", "shift": "false"},
	}
	after, err := d.Get(ctx, "default", l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, after.Devices); diff != "" {
		t.Errorf("LXD devices after ConfigureDevices (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, res.Devices); diff != "" {
		t.Errorf("reported devices (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(res.Devices, dry.Devices); diff != "" {
		t.Errorf("dry run planned other devices than the real run applied (-dry +real):\n%s", diff)
	}
	if !res.Changed || len(res.Warnings) != 0 {
		t.Errorf("Changed=%t warnings=%q; want a change and no warning on a container", res.Changed, res.Warnings)
	}

	// The same plan again: success, no change, the ETag untouched.
	again, err := e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed {
		t.Error("second ConfigureDevices reports a change")
	}
	if now, _ := d.Get(ctx, "default", l.Instance); now.ETag != after.ETag {
		t.Error("second ConfigureDevices updated the instance")
	}

	// A plan that cannot be built applies nothing.
	writeManifest(t, deps, devices.Mount{Name: "gone", RelativePath: "no/such/dir", GuestPath: "/gone", ReadOnly: true})
	_, err = e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec})
	if !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), "no/such/dir") {
		t.Errorf("missing source: error %v, want ErrNotFound naming the path", err)
	}
	if now, _ := d.Get(ctx, "default", l.Instance); now.ETag != after.ETag {
		t.Error("a failed ConfigureDevices changed the instance")
	}

	// Everything went over one SSH connection.
	if n := srv.AcceptedConnections(); n != 1 {
		t.Errorf("%d SSH connections, want 1 pooled connection", n)
	}
}
