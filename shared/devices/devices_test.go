package devices

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/seedjob"

	"github.com/google/go-cmp/cmp"
	"github.com/pikaci/vmexec/shared"
)

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"workspace-build", "workspace-build"},
		{"workspace_build_root", "workspace-build-root"},
		{"/var/tmp/pikaci/runs/run/snapshot", "var-tmp-pikaci-runs-run-snapshot"},
		{"ABC-def_09", "abc-def-09"},
		{"--x--", "x"},
		{"é", ""},
		{"aé b", "a--b"},
		{"", ""},
		{"___", ""},
	}
	for _, tt := range tests {
		if got := Sanitize(tt.in); got != tt.want {
			t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestDeviceNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		// Pinned by the seed's tests.
		{"run-scoped snapshot", SnapshotDeviceName("/var/tmp/pikaci/runs/run/snapshot", SnapshotGuestPath), "pk-snapsh-b34434da"},
		{"build payload root", PayloadDeviceName("workspace-build", "workspace_build_root"), "pk-workspac-51fa7376"},
		// From the public conformance cases.
		{"content-addressed snapshot", SnapshotDeviceName("/var/tmp/pikaci/snapshots/abc123/snapshot", SnapshotGuestPath), "pk-snapsh-48b13480"},
		{"quoted work dir snapshot", SnapshotDeviceName("/srv/ci work/it's here/snapshots/abc123/snapshot", SnapshotGuestPath), "pk-snapsh-39d1528a"},
		{"deps payload root", PayloadDeviceName("workspace-deps", "workspace_deps_root"), "pk-workspac-b966dd7a"},
		{"cache mount", PayloadDeviceName("workspace-build", "cache"), "pk-workspac-c269a483"},
		// Short forms.
		{"short", PayloadDeviceName("deps", "root"), "pk-deps-root"},
		{"exactly 20", PayloadDeviceName("abcdefgh", "ijklmnop"), "pk-abcdefgh-ijklmnop"},
		{"sanitised short", PayloadDeviceName("A_B", "C.D"), "pk-a-b-c-d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %s, want %s", tt.got, tt.want)
			}
		})
	}
	// 21 characters switches to the hashed form, keeping 8 characters of the payload.
	long := PayloadDeviceName("abcdefghi", "ijklmnop")
	if !strings.HasPrefix(long, "pk-abcdefgh-") || len(long) != len("pk-abcdefgh-")+8 {
		t.Errorf("21-character long form gives %s", long)
	}
	// A short payload name is kept whole in the hashed form.
	if n := PayloadDeviceName("ab", "a-very-long-mount-name"); !strings.HasPrefix(n, "pk-ab-") || len(n) != len("pk-ab-")+8 {
		t.Errorf("short payload, long mount gives %s", n)
	}
}

func TestMountValidate(t *testing.T) {
	ok := Mount{Name: "root", RelativePath: ".", GuestPath: "/g"}
	tests := []struct {
		name   string
		mutate func(*Mount)
		want   []string
	}{
		{"blank name", func(m *Mount) { m.Name = "  " }, []string{"name", "blank"}},
		{"empty name", func(m *Mount) { m.Name = "" }, []string{"name", "blank"}},
		{"relative path absolute", func(m *Mount) { m.RelativePath = "/etc" }, []string{"relative_path", "/etc", `"root"`}},
		{"relative path dotdot", func(m *Mount) { m.RelativePath = "../escape" }, []string{"relative_path", "../escape", `"root"`}},
		{"relative path inner dotdot", func(m *Mount) { m.RelativePath = "a/../../b" }, []string{"relative_path"}},
		{"relative path trailing dotdot", func(m *Mount) { m.RelativePath = "a/.." }, []string{"relative_path"}},
		{"relative path newline", func(m *Mount) { m.RelativePath = "a\nb" }, []string{"relative_path", "control"}},
		{"guest path relative", func(m *Mount) { m.GuestPath = "staged/x" }, []string{"guest_path", "staged/x", "not absolute"}},
		{"guest path empty", func(m *Mount) { m.GuestPath = "" }, []string{"guest_path", "not absolute"}},
		{"guest path dotdot", func(m *Mount) { m.GuestPath = "/a/../etc" }, []string{"guest_path", "/a/../etc"}},
		{"guest path NUL", func(m *Mount) { m.GuestPath = "/a\x00" }, []string{"guest_path"}},
	}
	if err := ok.Validate("p", 0); err != nil {
		t.Fatalf("valid mount refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok
			tt.mutate(&m)
			err := m.Validate("p", 0)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, shared.ErrInvalidInput) {
				t.Errorf("%v is not ErrInvalidInput", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestMountSource(t *testing.T) {
	for _, tt := range []struct{ rel, want string }{
		{"", "/r"}, {".", "/r"}, {"./", "/r"}, {"a/b", "/r/a/b"}, {"a//b/", "/r/a/b"}, {"./a", "/r/a"},
	} {
		if got := (Mount{RelativePath: tt.rel}).Source("/r"); got != tt.want {
			t.Errorf("Source(%q) = %s, want %s", tt.rel, got, tt.want)
		}
	}
}

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		mounts  int
		wantErr []string
	}{
		{"no mounts field", `{"schema_version":1,"kind":"k","entrypoints":[],"asset_roots":[]}`, 0, nil},
		{"null mounts", `{"schema_version":1,"kind":"k","mounts":null}`, 0, nil},
		{"two mounts", `{"schema_version":1,"kind":"k","mounts":[{"name":"a","relative_path":".","guest_path":"/a","read_only":true},{"name":"b","relative_path":"x","guest_path":"/b"}]}`, 2, nil},
		{"not json", `{"schema_version":1,`, 0, []string{"/m.json", "not valid JSON"}},
		{"trailing data", `{"schema_version":1} {}`, 0, []string{"/m.json"}},
		{"wrong schema", `{"schema_version":2}`, 0, []string{"/m.json", "schema_version 2"}},
		{"mount wrong type", `{"schema_version":1,"mounts":{}}`, 0, []string{"/m.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.data), "/m.json", "p")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Mounts) != tt.mounts {
					t.Errorf("%d mounts, want %d", len(m.Mounts), tt.mounts)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// memRemote is an in-memory remote filesystem: files, directories and
// symlinks, with readlink -f resolution. It counts the batches asked of it.
type memRemote struct {
	files   map[string]string
	dirs    map[string]bool
	links   map[string]string
	batches int
}

func newMemRemote() *memRemote {
	return &memRemote{files: map[string]string{}, dirs: map[string]bool{"/": true}, links: map[string]string{}}
}

func (m *memRemote) mkdirAll(p string) {
	for ; p != "/"; p = path.Dir(p) {
		m.dirs[p] = true
	}
}

func (m *memRemote) file(p, data string) { m.mkdirAll(path.Dir(p)); m.files[p] = data }
func (m *memRemote) link(p, target string) {
	m.mkdirAll(path.Dir(p))
	m.links[p] = target
}

func (m *memRemote) exists(p string) bool {
	_, f := m.files[p]
	return f || m.dirs[p]
}

// resolve follows readlink -f: every component but the last must exist.
func (m *memRemote) resolve(p string) (string, error) {
	cur := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		if t, ok := m.links[next]; ok {
			if hops++; hops > 40 {
				return "", fmt.Errorf("%s: too many levels of symbolic links", p)
			}
			if !strings.HasPrefix(t, "/") {
				t = path.Join(cur, t)
			}
			rest = append(strings.Split(strings.TrimPrefix(t, "/"), "/"), rest...)
			cur = "/"
			continue
		}
		if !m.exists(next) && len(rest) > 0 {
			return "", fmt.Errorf("%s: %w", next, fs.ErrNotExist)
		}
		cur = next
	}
	return cur, nil
}

func (m *memRemote) Fetch(_ context.Context, q Query) (Answer, error) {
	m.batches++
	var a Answer
	for _, p := range q.Read {
		r, err := m.resolve(p)
		data, ok := m.files[r]
		if err != nil || !ok {
			a.Files = append(a.Files, File{Err: fmt.Errorf("%s: %w", p, fs.ErrNotExist)})
			continue
		}
		a.Files = append(a.Files, File{Data: []byte(data)})
	}
	for _, p := range q.Resolve {
		r, err := m.resolve(p)
		if err != nil {
			a.Resolved = append(a.Resolved, Resolved{Err: err})
			continue
		}
		a.Resolved = append(a.Resolved, Resolved{Path: r, Exists: m.exists(r)})
	}
	return a, nil
}

const (
	jobRemote = "/var/tmp/pikaci/runs/run/jobs/job"
	depsDir   = jobRemote + "/staged-linux-rust/workspace-deps"
	buildDir  = jobRemote + "/staged-linux-rust/workspace-build"
)

func manifest(mounts ...string) string {
	return `{"schema_version":1,"kind":"k","mounts":[` + strings.Join(mounts, ",") + `]}`
}

func mount(name, rel, guest string, ro bool) string {
	return fmt.Sprintf(`{"name":%q,"relative_path":%q,"guest_path":%q,"read_only":%t}`, name, rel, guest, ro)
}

func seedSpec() shared.JobSpec { return seedjob.Spec() }

func seedRemote() *memRemote {
	m := newMemRemote()
	m.mkdirAll("/var/tmp/pikaci/snapshots/abc123/snapshot")
	m.file(depsDir+"/"+ManifestPath, manifest(mount("workspace_deps_root", ".", "/staged/linux-rust/workspace-deps", true)))
	m.file(buildDir+"/"+ManifestPath, manifest(mount("workspace_build_root", ".", "/staged/linux-rust/workspace-build", true)))
	return m
}

func TestBuildSeed(t *testing.T) {
	r := seedRemote()
	p, err := Build(context.Background(), seedSpec(), r)
	if err != nil {
		t.Fatal(err)
	}
	got, warnings := p.Config(Target{VirtualMachine: true, VirtiofsBus: true})
	want := shared.Devices{
		"pk-snapsh-48b13480":   {"type": "disk", "source": "/var/tmp/pikaci/snapshots/abc123/snapshot", "path": "/workspace/snapshot", "readonly": "true", "shift": "false", "io.bus": "virtiofs"},
		"pk-workspac-b966dd7a": {"type": "disk", "source": depsDir, "path": "/staged/linux-rust/workspace-deps", "readonly": "true", "shift": "false", "io.bus": "virtiofs"},
		"pk-workspac-51fa7376": {"type": "disk", "source": buildDir, "path": "/staged/linux-rust/workspace-build", "readonly": "true", "shift": "false", "io.bus": "virtiofs"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Config (-want +got):\n%s", d)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings %q", warnings)
	}
	if r.batches != 1 {
		t.Errorf("%d batches for root-only mounts, want 1", r.batches)
	}
	if p.Instance != "pikaci-6fd8c7b5193e" {
		t.Errorf("instance %s", p.Instance)
	}
}

func TestConfigTargets(t *testing.T) {
	p, err := Build(context.Background(), seedSpec(), seedRemote())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		target   Target
		bus      bool
		warnings int
	}{
		{"vm with extension", Target{VirtualMachine: true, VirtiofsBus: true}, true, 0},
		{"vm without extension", Target{VirtualMachine: true}, false, 1},
		{"container with extension", Target{VirtiofsBus: true}, false, 0},
		{"container without extension", Target{}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w := p.Config(tt.target)
			for name, d := range c {
				if _, has := d["io.bus"]; has != tt.bus {
					t.Errorf("%s: io.bus present = %t, want %t", name, has, tt.bus)
				}
			}
			if len(w) != tt.warnings {
				t.Errorf("warnings %q, want %d", w, tt.warnings)
			}
			if tt.warnings > 0 && !strings.Contains(w[0], "io.bus") {
				t.Errorf("warning %q does not say io.bus was left out", w[0])
			}
		})
	}
}

func TestBuildSymlinkedRootAndSubPath(t *testing.T) {
	r := seedRemote()
	delete(r.files, buildDir+"/"+ManifestPath)
	r.link(buildDir, "/nix/store/0f3k9q-workspace-build")
	r.file("/nix/store/0f3k9q-workspace-build/"+ManifestPath, manifest(
		mount("workspace_build_root", ".", "/staged/linux-rust/workspace-build", true),
		mount("cache", "target/cache", "/staged/cache", false),
	))
	r.link("/nix/store/0f3k9q-workspace-build/target", "build-out")
	r.mkdirAll("/nix/store/0f3k9q-workspace-build/build-out/cache")
	p, err := Build(context.Background(), seedSpec(), r)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := p.Config(Target{VirtualMachine: true, VirtiofsBus: true})
	if s := got["pk-workspac-51fa7376"]["source"]; s != "/nix/store/0f3k9q-workspace-build" {
		t.Errorf("root source %s", s)
	}
	cache := got["pk-workspac-c269a483"]
	if cache["source"] != "/nix/store/0f3k9q-workspace-build/build-out/cache" {
		t.Errorf("cache source %s", cache["source"])
	}
	if _, ro := cache["readonly"]; ro {
		t.Error("read-write mount carries readonly")
	}
	if r.batches != 2 {
		t.Errorf("%d batches, want 2 (roots, then the sub-path)", r.batches)
	}
}

// TestBuildRefusesEscapes: attack 1 and 2 of the hardening issue, against
// the plan: whatever a payload declares must resolve inside its resolved
// root (the root itself may be a symlink).
func TestBuildRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(r *memRemote)
		want  []string
	}{
		{"mount is a symlink to /", func(r *memRemote) {
			r.file(buildDir+"/"+ManifestPath, manifest(mount("hostroot", "host", "/mnt/host", false)))
			r.link(buildDir+"/host", "/")
		}, []string{`"hostroot"`, `resolves to "/"`}},
		{"mount through a symlinked dir to /etc", func(r *memRemote) {
			r.file(buildDir+"/"+ManifestPath, manifest(mount("etc", "a/etc", "/mnt/etc", false)))
			r.link(buildDir+"/a", "/")
			r.mkdirAll("/etc")
		}, []string{`"etc"`, `resolves to "/etc"`}},
		{"root is a symlink, mount escapes it", func(r *memRemote) {
			delete(r.files, buildDir+"/"+ManifestPath)
			r.link(buildDir, "/nix/store/x-build")
			r.file("/nix/store/x-build/"+ManifestPath, manifest(mount("up", "out", "/mnt/up", true)))
			r.link("/nix/store/x-build/out", "../x-other")
			r.mkdirAll("/nix/store/x-other")
		}, []string{`"up"`, `"/nix/store/x-other"`, "/nix/store/x-build"}},
		{"sibling with a common prefix", func(r *memRemote) {
			delete(r.files, buildDir+"/"+ManifestPath)
			r.link(buildDir, "/nix/store/x-build")
			r.file("/nix/store/x-build/"+ManifestPath, manifest(mount("sib", "s", "/mnt/s", true)))
			r.link("/nix/store/x-build/s", "/nix/store/x-build2")
			r.mkdirAll("/nix/store/x-build2")
		}, []string{`"sib"`, `"/nix/store/x-build2"`}},
		{"snapshot dir is a link planted out of the work dir", func(r *memRemote) {
			delete(r.dirs, "/var/tmp/pikaci/snapshots/abc123/snapshot")
			delete(r.dirs, "/var/tmp/pikaci/snapshots/abc123")
			r.link("/var/tmp/pikaci/snapshots/abc123", "/home/victim")
			r.mkdirAll("/home/victim/snapshot")
		}, []string{"/var/tmp/pikaci/snapshots/abc123/snapshot", `resolves to "/home/victim/snapshot", not to "/var/tmp/pikaci/snapshots/abc123/snapshot" below the work dir /var/tmp/pikaci: a link on the way`}},
		{"snapshot dir is a link to another place in the work dir", func(r *memRemote) {
			delete(r.dirs, "/var/tmp/pikaci/snapshots/abc123/snapshot")
			r.link("/var/tmp/pikaci/snapshots/abc123/snapshot", "/var/tmp/pikaci/runs/other/jobs/j/deps")
			r.mkdirAll("/var/tmp/pikaci/runs/other/jobs/j/deps")
		}, []string{`resolves to "/var/tmp/pikaci/runs/other/jobs/j/deps"`, "a link on the way"}},
		{"manifest is a symlink out of the root", func(r *memRemote) {
			delete(r.files, buildDir+"/"+ManifestPath)
			r.file("/etc/shadow", "root:secret-hash:19000:0:99999:7:::\n")
			r.link(buildDir+"/"+ManifestPath, "/etc/shadow")
		}, []string{"payload-manifest.json", `resolves to "/etc/shadow"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := seedRemote()
			tc.setup(r)
			_, err := Build(context.Background(), seedSpec(), r)
			if err == nil {
				t.Fatal("plan accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error echoes the file: %v", err)
			}
		})
	}
}

// A work dir that is itself a link is fine: the snapshot is inside it once
// both are resolved.
func TestBuildWorkDirThatIsALink(t *testing.T) {
	r := newMemRemote()
	r.mkdirAll("/data/pikaci/snapshots/abc123/snapshot")
	r.link("/var/tmp/pikaci", "/data/pikaci")
	r.file("/data/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-deps/"+ManifestPath, manifest(mount("workspace_deps_root", ".", "/staged/linux-rust/workspace-deps", true)))
	r.file("/data/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/"+ManifestPath, manifest(mount("workspace_build_root", ".", "/staged/linux-rust/workspace-build", true)))
	p, err := Build(context.Background(), seedSpec(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Devices[0].Resolved; got != "/data/pikaci/snapshots/abc123/snapshot" {
		t.Errorf("snapshot resolved to %s", got)
	}
}

func TestBuildUnstaged(t *testing.T) {
	s := seedSpec()
	s.Job.Staged = false
	r := newMemRemote()
	r.mkdirAll("/var/tmp/pikaci/runs/run/snapshot")
	p, err := Build(context.Background(), s, r)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"pk-snapsh-b34434da"}, p.Names()); d != "" {
		t.Errorf("names (-want +got):\n%s", d)
	}
}

func TestBuildLocalHostUsesCanonicalLocalDir(t *testing.T) {
	s := seedSpec()
	s.Remote.Host = "localhost"
	r := newMemRemote()
	r.mkdirAll("/var/tmp/pikaci/snapshots/abc123/snapshot")
	r.link("/tmp", "private/tmp") // like macOS: /tmp is a symlink
	r.file("/private/tmp/run/jobs/job/staged-linux-rust/workspace-deps/"+ManifestPath, manifest(mount("root", ".", "/d", true)))
	r.file("/private/tmp/run/jobs/job/staged-linux-rust/workspace-build/"+ManifestPath, manifest(mount("root", ".", "/b", true)))
	p, err := Build(context.Background(), s, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range p.Devices[1:] {
		if !strings.HasPrefix(d.Resolved, "/private/tmp/run/jobs/job/") || !strings.HasPrefix(d.Source, "/private/tmp/") {
			t.Errorf("device %s source %s resolved %s: want the canonical local dir", d.Name, d.Source, d.Resolved)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		spec   func(*shared.JobSpec)
		remote func(*memRemote)
		kind   error
		want   []string
	}{
		{"writable workspace", func(s *shared.JobSpec) { s.Job.WritableWorkspace = true }, nil, shared.ErrInvalidInput, []string{"writable workspace"}},
		{"invalid job", func(s *shared.JobSpec) { s.Job.ID = "a/b" }, nil, shared.ErrInvalidInput, []string{"a/b"}},
		{"manifest missing", nil, func(r *memRemote) { delete(r.files, buildDir+"/"+ManifestPath) }, shared.ErrNotFound, []string{buildDir}},
		{"manifest broken", nil, func(r *memRemote) { r.files[buildDir+"/"+ManifestPath] = "{" }, shared.ErrInvalidInput, []string{buildDir + "/" + ManifestPath}},
		{"guest path relative", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("workspace_build_root", ".", "staged/x", true))
		}, shared.ErrInvalidInput, []string{"guest_path", "workspace_build_root"}},
		{"relative path escape", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("workspace_build_root", "../escape", "/x", true))
		}, shared.ErrInvalidInput, []string{"relative_path", "workspace_build_root"}},
		{"duplicate guest path", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("b", ".", "/staged/linux-rust/workspace-deps/", true))
		}, shared.ErrInvalidInput, []string{"workspace_deps_root", `"b"`, "/staged/linux-rust/workspace-deps"}},
		{"guest path on the snapshot", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("b", ".", "/workspace/snapshot", true))
		}, shared.ErrInvalidInput, []string{"snapshot", "/workspace/snapshot"}},
		{"duplicate device name", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("x.y", ".", "/1", true), mount("x_y", "sub", "/2", true))
		}, shared.ErrInvalidInput, []string{`"x.y"`, `"x_y"`, "device name"}},
		{"source missing", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("c", "no/such", "/c", true))
		}, shared.ErrNotFound, []string{buildDir + "/no/such"}},
		{"snapshot missing", nil, func(r *memRemote) { delete(r.dirs, "/var/tmp/pikaci/snapshots/abc123/snapshot") },
			shared.ErrNotFound, []string{"/var/tmp/pikaci/snapshots/abc123/snapshot"}},
		{"symlink loop", nil, func(r *memRemote) {
			r.files[buildDir+"/"+ManifestPath] = manifest(mount("c", "loop/x", "/c", true))
			r.link(buildDir+"/loop", "loop")
		}, shared.ErrNotFound, []string{buildDir + "/loop/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seedSpec()
			if tt.spec != nil {
				tt.spec(&s)
			}
			r := seedRemote()
			if tt.remote != nil {
				tt.remote(r)
			}
			_, err := Build(context.Background(), s, r)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %v is not %v", err, tt.kind)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestBuildFailsBeforeIO: invalid input is refused before any remote read.
func TestBuildFailsBeforeIO(t *testing.T) {
	s := seedSpec()
	s.Job.WritableWorkspace = true
	r := seedRemote()
	if _, err := Build(context.Background(), s, r); err == nil {
		t.Fatal("accepted")
	}
	if r.batches != 0 {
		t.Errorf("%d remote batches before refusing", r.batches)
	}
}

type failingRemote struct{ err error }

func (f failingRemote) Fetch(context.Context, Query) (Answer, error) { return Answer{}, f.err }

func TestBuildRemoteFailure(t *testing.T) {
	boom := shared.Errorf(shared.ErrUnavailable, "remote.host", "pika-build", "dial pika-build: refused")
	_, err := Build(context.Background(), seedSpec(), failingRemote{boom})
	if !errors.Is(err, shared.ErrUnavailable) {
		t.Errorf("error %v lost its kind", err)
	}
}

type shortRemote struct{}

func (shortRemote) Fetch(context.Context, Query) (Answer, error) { return Answer{}, nil }

func TestBuildShortAnswer(t *testing.T) {
	if _, err := Build(context.Background(), seedSpec(), shortRemote{}); err == nil {
		t.Error("a short answer was accepted")
	}
}

func TestBuildAheadPlansTheSnapshotDirAsItWillResolve(t *testing.T) {
	const snap = "/var/tmp/pikaci/snapshots/abc123/snapshot"
	tests := []struct {
		name  string
		setup func(m *memRemote)
		want  string
	}{
		{name: "nothing of the work dir exists yet", want: snap},
		{name: "the snapshot dir's parent exists", setup: func(m *memRemote) { m.mkdirAll("/var/tmp/pikaci/snapshots/abc123") }, want: snap},
		{name: "the snapshot dir exists", setup: func(m *memRemote) { m.mkdirAll(snap) }, want: snap},
		{name: "the work dir's parent is a symlink, the work dir is missing",
			setup: func(m *memRemote) { m.mkdirAll("/data/tmp"); m.link("/var/tmp", "/data/tmp") },
			want:  "/data/tmp/pikaci/snapshots/abc123/snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seedSpec()
			s.Host.StagedPayloads = nil
			r := newMemRemote()
			if tt.setup != nil {
				tt.setup(r)
			}
			p, err := BuildAhead(context.Background(), s, r)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := p.Config(Target{})
			if src := got["pk-snapsh-48b13480"]["source"]; src != tt.want {
				t.Errorf("snapshot source %q, want %q", src, tt.want)
			}
			if r.batches != 1 {
				t.Errorf("%d batches, want 1", r.batches)
			}
			// Build itself still wants the snapshot dir to be there.
			if _, err := Build(context.Background(), s, r); tt.setup == nil && err == nil {
				t.Errorf("Build planned a snapshot dir that does not exist")
			}
		})
	}
}
