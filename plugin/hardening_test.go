package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pikaci/vmexec/internal/lxdtest"
	"github.com/pikaci/vmexec/internal/sshdtest"
	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// hardenFixture is a staged job against real sshd and real LXD with its
// directories prepared and its snapshot dir made.
type hardenFixture struct {
	srv  *sshdtest.Server
	d    *lxdtest.Daemon
	e    *plugin.Executor
	work string
	spec shared.JobSpec
	l    layout.Layout
}

func newHardenFixture(t *testing.T) *hardenFixture {
	t.Helper()
	sshdtest.Require(t)
	d := lxdtest.Shared(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	work := filepath.Join(t.TempDir(), "work")
	spec := e2eSpec(t, work, d.Socket)
	l, err := layout.Derive(spec)
	if err != nil {
		t.Fatal(err)
	}
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PrepareDirectories(t.Context(), shared.PrepareRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.SnapshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifest(t, l.Payloads[0].RemoteDir, devices.Mount{Name: "workspace_deps_root", RelativePath: ".", GuestPath: "/staged/linux-rust/workspace-deps", ReadOnly: true})
	return &hardenFixture{srv: srv, d: d, e: e, work: work, spec: spec, l: l}
}

// refused runs ConfigureDevices, dry and real, and checks both fail with
// every want in the error and the instance unchanged.
func (f *hardenFixture) refused(t *testing.T, wants ...string) error {
	t.Helper()
	ctx := t.Context()
	before, err := f.d.Get(ctx, "default", f.l.Instance)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for _, dry := range []bool{true, false} {
		_, err := f.e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: f.spec, DryRun: dry})
		if err == nil {
			t.Fatalf("dry=%t: ConfigureDevices accepted the payload", dry)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("dry=%t: error %q lacks %s", dry, err, w)
			}
		}
		last = err
	}
	if now, _ := f.d.Get(ctx, "default", f.l.Instance); now.ETag != before.ETag {
		t.Error("a refused ConfigureDevices changed the instance")
	}
	return last
}

// TestPayloadMountOfHostRootRefused (attack 1): a mount that is a symlink to / (writable),
// a mount through a symlinked dir to /etc, and a symlinked payload root with
// a mount out of it: each is refused naming the mount and where it
// resolves, against real sshd and LXD.
func TestPayloadMountOfHostRootRefused(t *testing.T) {
	f := newHardenFixture(t)
	createContainer(t, f.d, f.l.Instance, nil)
	build := f.l.Payloads[1].RemoteDir

	writeManifest(t, build, devices.Mount{Name: "hostroot", RelativePath: "host", GuestPath: "/mnt/host"})
	if err := os.Symlink("/", filepath.Join(build, "host")); err != nil {
		t.Fatal(err)
	}
	f.refused(t, `"hostroot"`, `resolves to "/"`)

	writeManifest(t, build, devices.Mount{Name: "etc", RelativePath: "sys/etc", GuestPath: "/mnt/etc"})
	if err := os.Symlink("/", filepath.Join(build, "sys")); err != nil {
		t.Fatal(err)
	}
	f.refused(t, `"etc"`, `resolves to "/etc"`)

	store := filepath.Join(f.work, "store", "x-build")
	writeManifest(t, store, devices.Mount{Name: "outside", RelativePath: "out", GuestPath: "/mnt/out", ReadOnly: true})
	if err := os.MkdirAll(store+"2", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../x-build2", filepath.Join(store, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(build); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(store, build); err != nil {
		t.Fatal(err)
	}
	f.refused(t, `"outside"`, store+"2", "outside the payload's root "+store)
}

// TestManifestOutsideRootRefused (attack 2): the manifest is a symlink to a root-only
// JSON file outside the payload: refused naming the manifest and where it
// resolves; nothing of the file's contents appears in the error.
func TestManifestOutsideRootRefused(t *testing.T) {
	f := newHardenFixture(t)
	createContainer(t, f.d, f.l.Instance, nil)
	secret := filepath.Join(f.work, "secret.json")
	if err := os.WriteFile(secret, []byte(`{"schema_version":"secret-token-1","password":"secret-token-2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(f.l.Payloads[1].RemoteDir, devices.ManifestPath)
	if err := os.MkdirAll(filepath.Dir(m), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, m); err != nil {
		t.Fatal(err)
	}
	err := f.refused(t, m, `resolves to "`+secret+`"`)
	if !errors.Is(err, shared.ErrPermission) || strings.Contains(err.Error(), "secret-token") {
		t.Errorf("error %v: want ErrPermission without the file's contents", err)
	}

	// Inside the root, a manifest whose values are wrong is named by field
	// and offset only.
	if err := os.Remove(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m, []byte(`{"schema_version":"secret-token-1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err = f.refused(t, "schema_version")
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("error echoes the manifest: %v", err)
	}
}

func manyMounts(root string, n int, dirs bool) ([]devices.Mount, error) {
	ms := make([]devices.Mount, n)
	for i := range ms {
		rel := "."
		if dirs {
			rel = fmt.Sprintf("mounts/%s-%03d", strings.Repeat("d", 200), i)
			if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
				return nil, err
			}
		}
		ms[i] = devices.Mount{Name: fmt.Sprintf("m%d", i), RelativePath: rel, GuestPath: fmt.Sprintf("/mnt/%s/m%d", strings.Repeat("g", 200), i), ReadOnly: true}
	}
	return ms, nil
}

// TestBigManifestKeepsConnection (attack 3): 1,000 mounts (and a manifest over
// 1 MiB) get a clear limit error, and the pooled connection they share with
// a concurrent job survives: that job succeeds, over the same one
// connection. 256 long mounts, the limit, are planned through real sshd
// with a constant-size command and one session per batch.
func TestBigManifestKeepsConnection(t *testing.T) {
	f := newHardenFixture(t)
	ctx := t.Context()
	build := f.l.Payloads[1].RemoteDir

	ms, err := manyMounts(build, 1000, false)
	if err != nil {
		t.Fatal(err)
	}
	writeManifest(t, build, ms...)
	other := e2eSpec(t, f.work, f.d.Socket)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, errs[i] = f.e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: f.spec, DryRun: true})
			} else {
				_, errs[i] = f.e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: other})
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 {
			if err == nil || !strings.Contains(err.Error(), "declares 1000 mounts, more than 256") {
				t.Errorf("1,000 mounts: error %v, want the mount limit", err)
			}
		} else if err != nil {
			t.Errorf("concurrent job on the same connection: %v", err)
		}
	}

	big := filepath.Join(build, devices.ManifestPath)
	data := `{"schema_version":1,"kind":"` + strings.Repeat("k", 2<<20) + `"}`
	if err := os.WriteFile(big, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: f.spec, DryRun: true})
	if err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") || strings.Contains(err.Error(), "kkkk") {
		t.Errorf("2 MiB manifest: error %v, want the size limit without its contents", err)
	}

	ms, err = manyMounts(build, 256, true)
	if err != nil {
		t.Fatal(err)
	}
	writeManifest(t, build, ms...)
	createContainer(t, f.d, f.l.Instance, nil)
	sessions := f.srv.Sessions()
	res, err := f.e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: f.spec, DryRun: true})
	if err != nil {
		t.Fatalf("256 mounts: %v", err)
	}
	if len(res.Planned) != 2+256 {
		t.Errorf("256 mounts: %d devices planned, want 258", len(res.Planned))
	}
	if got := f.srv.Sessions() - sessions; got != 2 {
		t.Errorf("256 mounts: %d remote commands, want 2 (manifests and roots, then the sources)", got)
	}
	if n := f.srv.AcceptedConnections(); n != 1 {
		t.Errorf("%d SSH connections, want the one pooled connection throughout", n)
	}
}

// TestStrictManifestThroughSSHD (attack 7): duplicate keys and a case variant
// of a key in a manifest read over real sshd are refused.
func TestStrictManifestThroughSSHD(t *testing.T) {
	f := newHardenFixture(t)
	createContainer(t, f.d, f.l.Instance, nil)
	m := filepath.Join(f.l.Payloads[1].RemoteDir, devices.ManifestPath)
	if err := os.MkdirAll(filepath.Dir(m), 0o755); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		`{"schema_version":1,"mounts":[{"name":"r","relative_path":".","guest_path":"/r","read_only":true,"read_only":false}]}`: `duplicate key "read_only"`,
		`{"schema_version":1,"mounts":[],"Mounts":[{"name":"r","relative_path":".","guest_path":"/r"}]}`:                        `key "Mounts" differs`,
		"{\"schema_version\":1,\"kind\":\"\xff\"}": "invalid UTF-8",
	} {
		if err := os.WriteFile(m, []byte(in), 0o644); err != nil {
			t.Fatal(err)
		}
		f.refused(t, want, m)
	}
}

// TestLongIDCreatesNothing (attack 8): a 256-byte job id failed with "File
// name too long" after cache/, snapshots/ and runs/ were made. It is
// refused before any command reaches the remote host.
func TestLongIDCreatesNothing(t *testing.T) {
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	cfg := srv.WriteClientConfig(t, "vm-host")
	e := plugin.New(nil)
	t.Cleanup(func() { e.Close() })
	if err := e.Configure(t.Context(), shared.Settings{SSHConfigPath: cfg}); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	for _, id := range []string{strings.Repeat("j", 256), "job\u202egpj", "job\u0085"} {
		spec := e2eSpec(t, work, "/nonexistent.socket")
		spec.Job.ID = id
		spec.Host.JobDir = "/tmp/pikaci-e2e/run-1/jobs/" + id
		spec.Host.StagedPayloads = nil
		_, err := e.PrepareDirectories(context.Background(), shared.PrepareRequest{Spec: spec})
		if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "job.id") {
			t.Errorf("id %q: error %v, want invalid job.id", id, err)
		}
	}
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir exists after refused jobs: %v", err)
	}
	if n := srv.Sessions(); n != 0 {
		t.Errorf("%d commands reached the remote host, want 0", n)
	}
}
