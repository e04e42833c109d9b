package remotefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/testharness/vfs"
	"github.com/pikaci/vmexec/testharness/vfs/vfstest"
)

// layout describes a tree: dirs, files (path → content), symlinks (path →
// target). Symlinks are made last, in order, so a case can point anywhere.
type layout struct {
	dirs     []string
	files    map[string]string
	symlinks [][2]string
}

func newFS(tb testing.TB, l layout) *FS {
	tb.Helper()
	f, err := New(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range l.dirs {
		if err := f.MkdirAll(d); err != nil {
			tb.Fatalf("MkdirAll(%q): %v", d, err)
		}
	}
	for p, c := range l.files {
		if err := f.WriteFile(p, []byte(c)); err != nil {
			tb.Fatalf("WriteFile(%q): %v", p, err)
		}
	}
	for _, s := range l.symlinks {
		if err := f.Symlink(s[1], s[0]); err != nil {
			tb.Fatalf("Symlink(%q, %q): %v", s[1], s[0], err)
		}
	}
	return f
}

// hostile is a case-style tree full of links that try to leave the root.
func hostile(tb testing.TB) *FS {
	tb.Helper()
	l := layout{
		dirs: []string{
			"/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust",
			"/nix/store/0f3k9q-workspace-build",
			"/a/b/c",
			"/etc",
			"/sp ace/it's\nnew",
		},
		files: map[string]string{
			"/nix/store/0f3k9q-workspace-build/manifest.json": `{"mounts":[]}`,
			"/d/file":                   "content\n",
			"/sp ace/it's\nnew/f \"q\"": "odd\n",
		},
		symlinks: [][2]string{
			{"/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build", "/nix/store/0f3k9q-workspace-build"},
			{"/rel", "a/b"},
			{"/a/up", "../.."},
			{"/a/b/upup", "../../../../../../../.."},
			{"/esc", "/../../etc"},
			{"/esc2", "../../../../../../etc"},
			{"/passwd", "/etc/passwd"},
			{"/loop1", "loop2"},
			{"/loop2", "loop1"},
			{"/self", "self"},
			{"/dangling", "/nope/x"},
			{"/dangling-last", "/missing-last"},
			{"/tofile", "d/file"},
			{"/dotdot", ".."},
			{"/slashes", "//a///b//"},
			{"/a/b/c/back", "../../../rel/c"},
			{"/spacelink", "sp ace/it's\nnew"},
		},
	}
	for i := 0; i <= vfs.MaxSymlinks; i++ {
		l.symlinks = append(l.symlinks, [2]string{fmt.Sprintf("/chain/%d", i), fmt.Sprintf("%d", i+1)})
	}
	l.dirs = append(l.dirs, fmt.Sprintf("/chain/%d", vfs.MaxSymlinks+1))
	f := newFS(tb, l)
	// A link to this machine's real path of the root: on the remote it is
	// just a path that does not exist.
	if err := f.Symlink(f.root+"/etc", "/hostroot"); err != nil {
		tb.Fatal(err)
	}
	return f
}

func TestCanonicalize(t *testing.T) {
	f := hostile(t)
	tests := []struct {
		name string
		path string
		mode vfs.Mode
		want string
		err  error // errno wanted, nil for success
	}{
		{"root", "/", vfs.AllButLast, "/", nil},
		{"root many slashes", "////", vfs.AllButLast, "/", nil},
		{"dotdot at root stays", "/../../..", vfs.AllButLast, "/", nil},
		{"relative is from root", "a/b", vfs.AllButLast, "/a/b", nil},
		{"empty", "", vfs.AllButLast, "", syscall.ENOENT},
		{"plain dir", "/a/b/c", vfs.Existing, "/a/b/c", nil},
		{"dot components", "/a/./b/./c/.", vfs.Existing, "/a/b/c", nil},
		{"trailing slash on dir", "/a/b/", vfs.Existing, "/a/b", nil},
		{"case-style absolute link", "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build", vfs.Existing, "/nix/store/0f3k9q-workspace-build", nil},
		{"through case link", "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/manifest.json", vfs.Existing, "/nix/store/0f3k9q-workspace-build/manifest.json", nil},
		{"dotdot after link is physical", "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/..", vfs.Existing, "/nix/store", nil},
		{"relative link", "/rel/c", vfs.Existing, "/a/b/c", nil},
		{"relative link up to root", "/a/up", vfs.Existing, "/", nil},
		{"relative link far above root", "/a/b/upup/etc", vfs.Existing, "/etc", nil},
		{"absolute link with dotdot", "/esc", vfs.Existing, "/etc", nil},
		{"relative link escaping", "/esc2", vfs.Existing, "/etc", nil},
		{"link to remote etc passwd, all but last", "/passwd", vfs.AllButLast, "/etc/passwd", nil},
		{"link to remote etc passwd, existing", "/passwd", vfs.Existing, "", syscall.ENOENT},
		{"link to host root path", "/hostroot", vfs.AllButLast, "", syscall.ENOENT},
		{"link to host root path, missing", "/hostroot", vfs.Missing, f.root + "/etc", nil},
		{"loop", "/loop1", vfs.AllButLast, "", syscall.ELOOP},
		{"self loop", "/self/x", vfs.AllButLast, "", syscall.ELOOP},
		{"self loop, missing mode keeps the link", "/self/x/../y", vfs.Missing, "/self/y", nil},
		{"loop, missing mode keeps the link", "/loop1/x", vfs.Missing, "/loop1/x", nil},
		{"chain of vfs.MaxSymlinks", "/chain/1", vfs.Existing, fmt.Sprintf("/chain/%d", vfs.MaxSymlinks+1), nil},
		{"chain of vfs.MaxSymlinks+1", "/chain/0", vfs.Existing, "", syscall.ELOOP},
		{"dangling, parent missing", "/dangling", vfs.AllButLast, "", syscall.ENOENT},
		{"dangling, parent missing, missing mode", "/dangling", vfs.Missing, "/nope/x", nil},
		{"dangling last", "/dangling-last", vfs.AllButLast, "/missing-last", nil},
		{"dangling last, existing", "/dangling-last", vfs.Existing, "", syscall.ENOENT},
		{"missing last", "/a/b/new", vfs.AllButLast, "/a/b/new", nil},
		{"missing last with trailing slash", "/a/b/new/", vfs.AllButLast, "/a/b/new", nil},
		{"missing then dot", "/a/b/new/.", vfs.AllButLast, "", syscall.ENOENT},
		{"missing then dotdot", "/a/b/new/..", vfs.AllButLast, "", syscall.ENOENT},
		{"missing then dotdot, missing mode", "/a/b/new/..", vfs.Missing, "/a/b", nil},
		{"missing middle", "/nope/x", vfs.AllButLast, "", syscall.ENOENT},
		{"missing middle, missing mode", "/nope/x/../y", vfs.Missing, "/nope/y", nil},
		{"file", "/tofile", vfs.Existing, "/d/file", nil},
		{"file with trailing slash", "/d/file/", vfs.AllButLast, "", syscall.ENOTDIR},
		{"under a file", "/d/file/x", vfs.AllButLast, "", syscall.ENOTDIR},
		{"dotdot under a file", "/d/file/..", vfs.AllButLast, "", syscall.ENOTDIR},
		{"dotdot under a file, missing mode", "/d/file/..", vfs.Missing, "/d", nil},
		{"link to dotdot", "/a/b/../../dotdot/a", vfs.Existing, "/a", nil},
		{"link with extra slashes", "/slashes/c", vfs.Existing, "/a/b/c", nil},
		{"link back through link", "/a/b/c/back", vfs.Existing, "/a/b/c", nil},
		{"spaces quotes newlines", "/spacelink/f \"q\"", vfs.Existing, "/sp ace/it's\nnew/f \"q\"", nil},
		{"NUL byte", "/a\x00b", vfs.AllButLast, "", syscall.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.Canonicalize(tt.path, tt.mode)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Canonicalize(%q, %v) = %q, %v; want error %v", tt.path, tt.mode, got, err, tt.err)
				}
				checkPathErr(t, f, err, tt.path)
				return
			}
			if err != nil {
				t.Fatalf("Canonicalize(%q, %v): %v", tt.path, tt.mode, err)
			}
			if got != tt.want {
				t.Errorf("Canonicalize(%q, %v) = %q, want %q", tt.path, tt.mode, got, tt.want)
			}
		})
	}
}

// checkPathErr asserts err is an *fs.PathError naming the remote path and
// never mentioning the root.
func checkPathErr(tb testing.TB, f *FS, err error, remote string) {
	tb.Helper()
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		tb.Fatalf("error %v (%T) is not an *fs.PathError", err, err)
	}
	if pe.Path != remote {
		tb.Errorf("error names %q, want remote path %q", pe.Path, remote)
	}
	if strings.Contains(err.Error(), f.root) {
		tb.Errorf("error %q leaks the host root %q", err, f.root)
	}
}

func TestResolveAndRealpathAreAllButLast(t *testing.T) {
	f := hostile(t)
	for _, p := range []string{"/dangling-last", "/rel/c", "/a/b/new", "/esc"} {
		want, err := f.Canonicalize(p, vfs.AllButLast)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := f.Resolve(p); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", p, got, err, want)
		}
		if got, err := f.Realpath(p); err != nil || got != want {
			t.Errorf("Realpath(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
}

// TestCanonicalizeMatchesGNUReadlink compares against the real readlink on a
// tree of relative links that stays under the root, where host and remote
// resolution must agree.
func TestCanonicalizeMatchesGNUReadlink(t *testing.T) {
	readlink, err := exec.LookPath("readlink")
	if err == nil {
		out, verr := exec.Command(readlink, "--version").Output()
		if verr != nil || !strings.Contains(string(out), "GNU coreutils") {
			err = fmt.Errorf("%s is not GNU readlink", readlink)
		}
	}
	if err != nil {
		testenv.SkipUnlessCIf(t, "GNU readlink needed: %v", err)
	}
	f := newFS(t, layout{
		dirs:  []string{"/a/b/c", "/x y/z"},
		files: map[string]string{"/a/f": "f", "/x y/z/g": "g"},
		symlinks: [][2]string{
			{"/a/l", "b/c"},
			{"/a/b/c/up", "../.."},
			{"/a/tf", "f"},
			{"/a/dl", "nowhere"},
			{"/a/dl2", "nowhere/deeper"},
			{"/a/lp", "lp2"},
			{"/a/lp2", "lp"},
			{"/a/toxy", "../x y/z"},
			{"/a/b/chain", "../l/up/tf"},
		},
	})
	paths := []string{
		"/a", "/a/", "/a/l", "/a/l/", "/a/l/..", "/a/l/../..", "/a/l/up", "/a/l/up/l/up/f",
		"/a/tf", "/a/tf/", "/a/tf/x", "/a/tf/..", "/a/dl", "/a/dl/", "/a/dl/x", "/a/dl2",
		"/a/lp", "/a/lp/x", "/a/missing", "/a/missing/", "/a/missing/.", "/a/missing/..",
		"/a/missing/x", "/a/./b/../b/./c", "/a//b///c//", "/a/toxy/g", "/a/toxy/../z/g",
		"/a/b/chain", "/a/b/chain/", "/a/f/.", "/x y", "/a/l/up/dl",
	}
	flags := map[vfs.Mode]string{vfs.AllButLast: "-f", vfs.Existing: "-e", vfs.Missing: "-m"}
	for _, p := range paths {
		for mode, flag := range flags {
			t.Run(fmt.Sprintf("%s %s", flag, p), func(t *testing.T) {
				out, rerr := exec.Command(readlink, flag, "--", f.root+p).Output()
				got, err := f.Canonicalize(p, mode)
				if (rerr == nil) != (err == nil) {
					t.Fatalf("readlink %s %q: %q, %v; Canonicalize: %q, %v", flag, p, out, rerr, got, err)
				}
				if rerr != nil {
					return
				}
				want := strings.TrimSuffix(string(out), "\n")
				want = "/" + strings.TrimPrefix(strings.TrimPrefix(want, f.root), "/")
				if got != want {
					t.Errorf("Canonicalize(%q, %v) = %q, GNU readlink says %q", p, mode, got, want)
				}
			})
		}
	}
}

func TestMkdirAll(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		created []string // dirs that must exist afterwards
		err     error
	}{
		{"new tree", "/var/tmp/pikaci/runs/run/jobs/job", []string{"/var", "/var/tmp/pikaci/runs/run/jobs/job"}, nil},
		{"existing", "/a/b", []string{"/a/b"}, nil},
		{"root", "/", []string{"/"}, nil},
		{"trailing slashes", "/n//m///", []string{"/n/m"}, nil},
		{"spaces and quotes", "/var/tmp/a b/it's", []string{"/var/tmp/a b/it's"}, nil},
		{"through absolute link", "/link/new", []string{"/a/b/new"}, nil},
		{"through escaping link", "/esc/new", []string{"/a/new"}, nil},
		{"dotdot after link is physical", "/link/../sib", []string{"/a/sib"}, nil},
		{"dotdot at root", "/../../top", []string{"/top"}, nil},
		{"link to dir is fine", "/link", []string{"/a/b"}, nil},
		{"file", "/a/f", nil, syscall.EEXIST},
		{"under a file", "/a/f/x", nil, syscall.ENOTDIR},
		{"dangling link", "/dangling/x", nil, syscall.ENOENT},
		{"dangling link last", "/dangling", nil, syscall.EEXIST},
		{"loop", "/loop/x", nil, syscall.ELOOP},
		{"empty", "", nil, syscall.ENOENT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t, layout{
				dirs:  []string{"/a/b"},
				files: map[string]string{"/a/f": "f"},
				symlinks: [][2]string{
					{"/link", "/a/b"},
					{"/esc", "../../../../a"},
					{"/dangling", "/nowhere/at/all"},
					{"/loop", "loop"},
				},
			})
			before, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			err = f.MkdirAll(tt.path)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("MkdirAll(%q) = %v, want %v", tt.path, err, tt.err)
				}
				checkPathErr(t, f, err, tt.path)
				after, serr := f.Snapshot()
				if serr != nil {
					t.Fatal(serr)
				}
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("failed MkdirAll changed the tree (-before +after):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("MkdirAll(%q): %v", tt.path, err)
			}
			for _, d := range tt.created {
				if !f.IsDir(d) {
					t.Errorf("%q is not a directory after MkdirAll(%q)", d, tt.path)
				}
			}
			// Nothing may appear outside the root: the root's parent holds
			// only the root.
			ents, err := os.ReadDir(filepath.Dir(f.root))
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 1 {
				t.Errorf("root's parent holds %d entries, want only the root", len(ents))
			}
		})
	}
}

func TestMkdirWithoutParents(t *testing.T) {
	f := newFS(t, layout{dirs: []string{"/a"}, symlinks: [][2]string{{"/d", "/x"}}})
	if err := f.Mkdir("/a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		err  error
	}{
		{"/a/b", syscall.EEXIST},
		{"/q/r", syscall.ENOENT},
		{"/d", syscall.EEXIST}, // mkdir(2) never follows a final link
		{"/", syscall.EEXIST},
	} {
		if err := f.Mkdir(tt.path, 0o755); !errors.Is(err, tt.err) {
			t.Errorf("Mkdir(%q) = %v, want %v", tt.path, err, tt.err)
		}
	}
	if f.Exists("/x") {
		t.Error("Mkdir through a dangling link created its target")
	}
}

func TestFiles(t *testing.T) {
	f := hostile(t)
	tests := []struct {
		name string
		path string
		want string
		err  error
	}{
		{"through case link", "/var/tmp/pikaci/runs/run/jobs/job/staged-linux-rust/workspace-build/manifest.json", `{"mounts":[]}`, nil},
		{"link to file", "/tofile", "content\n", nil},
		{"odd names", "/spacelink/f \"q\"", "odd\n", nil},
		{"remote etc passwd is not the host's", "/passwd", "", fs.ErrNotExist},
		{"directory", "/a", "", syscall.EISDIR},
		{"missing", "/nope", "", fs.ErrNotExist},
		{"loop", "/loop1", "", syscall.ELOOP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.ReadFile(tt.path)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ReadFile(%q) = %q, %v; want %v", tt.path, got, err, tt.err)
				}
				checkPathErr(t, f, err, tt.path)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("ReadFile(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestWriteFileAndOpenFile(t *testing.T) {
	f := hostile(t)
	// Writing through a link to the remote /etc/passwd creates the remote
	// file, never the host's.
	if err := f.WriteFile("/passwd", []byte("remote\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := f.ReadFile("/etc/passwd"); err != nil || string(got) != "remote\n" {
		t.Errorf("ReadFile(/etc/passwd) = %q, %v", got, err)
	}
	if err := f.WriteFile("/new/dir/file", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !f.IsDir("/new/dir") {
		t.Error("WriteFile did not create the parent directories")
	}
	if err := f.WriteFile("/d/file/x", nil); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("WriteFile under a file = %v, want ENOTDIR", err)
	}
	if err := f.WriteFile("/a", nil); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("WriteFile on a dir = %v, want EISDIR", err)
	}
	w, err := f.OpenFile("/d/file", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, "more\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.ReadFile("/d/file"); string(got) != "content\nmore\n" {
		t.Errorf("after append: %q", got)
	}
	if _, err := f.OpenFile("/nope/x", os.O_WRONLY|os.O_CREATE, 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenFile(O_CREATE) under a missing dir = %v, want ErrNotExist", err)
	}
}

func TestStatLstatReadlink(t *testing.T) {
	f := hostile(t)
	fi, err := f.Lstat("/rel")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 || fi.Name() != "rel" {
		t.Errorf("Lstat(/rel) = %v %q, want a symlink named rel", fi.Mode(), fi.Name())
	}
	fi, err = f.Stat("/rel")
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Name() != "b" {
		t.Errorf("Stat(/rel) = %v %q, want the directory b", fi.Mode(), fi.Name())
	}
	fi, err = f.Stat("/")
	if err != nil || fi.Name() != "/" {
		t.Errorf("Stat(/) = %v, %v; want name /", fi, err)
	}
	if _, err := f.Lstat("/dangling"); err != nil {
		t.Errorf("Lstat of a dangling link: %v", err)
	}
	if _, err := f.Stat("/dangling"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a dangling link = %v, want ErrNotExist", err)
	}
	if got, err := f.Readlink("/esc"); err != nil || got != "/../../etc" {
		t.Errorf("Readlink(/esc) = %q, %v", got, err)
	}
	if _, err := f.Readlink("/a"); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Readlink(dir) = %v, want EINVAL", err)
	}
	for p, want := range map[string]bool{"/a": true, "/rel": true, "/tofile": false, "/dangling": false, "/nope": false} {
		if got := f.IsDir(p); got != want {
			t.Errorf("IsDir(%q) = %v, want %v", p, got, want)
		}
	}
	for p, want := range map[string]bool{"/tofile": true, "/esc": true, "/dangling": false, "/loop1": false} {
		if got := f.Exists(p); got != want {
			t.Errorf("Exists(%q) = %v, want %v", p, got, want)
		}
	}
	ents, err := f.ReadDir("/rel")
	if err != nil || len(ents) != 2 || ents[0].Name() != "c" || ents[1].Name() != "upup" {
		t.Errorf("ReadDir(/rel) = %v, %v; want [c upup]", ents, err)
	}
}

func TestSnapshot(t *testing.T) {
	f := newFS(t, layout{
		dirs:     []string{"/a"},
		files:    map[string]string{"/a/f": "hello"},
		symlinks: [][2]string{{"/l", "/nix/store/x"}},
	})
	got, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/":    "dir",
		"/a":   "dir",
		"/a/f": "file sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
		"/l":   "symlink -> /nix/store/x",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Snapshot (-want +got):\n%s", diff)
	}
	if err := f.WriteFile("/a/f", []byte("changed")); err != nil {
		t.Fatal(err)
	}
	after, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if cmp.Equal(got, after) {
		t.Error("Snapshot did not notice rewritten content")
	}
	if diff := cmp.Diff([]string{"/", "/a", "/a/f", "/l"}, Paths(after)); diff != "" {
		t.Errorf("Paths (-want +got):\n%s", diff)
	}
}

func TestSymlinkRefusesExisting(t *testing.T) {
	f := newFS(t, layout{dirs: []string{"/a"}, symlinks: [][2]string{{"/l", "x"}}})
	for _, p := range []string{"/a", "/l", "/"} {
		if err := f.Symlink("y", p); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("Symlink(%q) = %v, want EEXIST", p, err)
		}
	}
}

func TestNewRejectsBadRoot(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{file, filepath.Join(dir, "missing")} {
		if _, err := New(root); err == nil {
			t.Errorf("New(%q) succeeded", root)
		}
	}
	// A root reached through a symlink works.
	link := filepath.Join(t.TempDir(), "l")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	f, err := New(link)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.MkdirAll("/x/y"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "x", "y")); err != nil || !fi.IsDir() {
		t.Errorf("MkdirAll under a symlinked root: %v", err)
	}
}

// The remote's filesystem resolves paths and links as the one model does.
func TestRemoteFSFollowsTheOneModel(t *testing.T) {
	vfstest.Run(t, newFS(t, layout{}), "")
}
