package remotefs

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// FuzzResolve resolves arbitrary paths, through one extra symlink with an
// arbitrary target, in a tree of hostile links, and checks that no result
// ever names a place outside the root and that everything the OS is asked to
// look at in a result is free of symlinks. Seeds: testdata/fuzz/FuzzResolve.
func FuzzResolve(f *testing.F) {
	fsys := hostile(f)
	if err := fsys.MkdirAll("/fz"); err != nil {
		f.Fatal(err)
	}
	dyn := fsys.host("/fz/dyn")
	f.Add("/fz/dyn", "/../../etc")
	f.Fuzz(func(t *testing.T, p, target string) {
		if err := os.Remove(dyn); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		_ = fsys.Symlink(target, "/fz/dyn") // fails for NUL bytes; fine
		for _, mode := range []vfs.Mode{vfs.AllButLast, vfs.Existing, vfs.Missing} {
			res, err := fsys.Canonicalize(p, mode)
			if err != nil {
				var pe *fs.PathError
				if !errors.As(err, &pe) || pe.Path != p {
					t.Fatalf("Canonicalize(%q, %v): error %v does not name the remote path", p, mode, err)
				}
				if !strings.Contains(p, fsys.root) && strings.Contains(err.Error(), fsys.root) {
					t.Fatalf("Canonicalize(%q, %v): error %q leaks the root", p, mode, err)
				}
				continue
			}
			checkConfined(t, fsys, p, mode, res)
		}
		// The read paths must not fail in surprising ways or leak the root.
		for _, err := range []error{
			func() error { _, err := fsys.ReadFile(p); return err }(),
			func() error { _, err := fsys.Lstat(p); return err }(),
			func() error { _, err := fsys.Readlink(p); return err }(),
		} {
			if err != nil && !strings.Contains(p, fsys.root) && strings.Contains(err.Error(), fsys.root) {
				t.Fatalf("error %q for %q leaks the root", err, p)
			}
		}
	})
}

func checkConfined(t *testing.T, fsys *FS, p string, mode vfs.Mode, res string) {
	t.Helper()
	if !strings.HasPrefix(res, "/") || path.Clean(res) != res {
		t.Fatalf("Canonicalize(%q, %v) = %q: not absolute and clean", p, mode, res)
	}
	host := fsys.host(res)
	rel, err := filepath.Rel(fsys.root, host)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Fatalf("Canonicalize(%q, %v) = %q: host path %q is outside the root %q", p, mode, res, host, fsys.root)
	}
	if mode == vfs.Missing {
		return // never handed to the OS
	}
	// Every existing prefix of the result must be free of symlinks: the
	// OS will be handed exactly this path.
	look := host
	if mode == vfs.AllButLast && res != "/" {
		if _, err := os.Lstat(host); err != nil {
			look = filepath.Dir(host)
		}
	}
	real, err := filepath.EvalSymlinks(look)
	if err != nil {
		t.Fatalf("Canonicalize(%q, %v) = %q: %q does not exist: %v", p, mode, res, look, err)
	}
	if real != look {
		t.Fatalf("Canonicalize(%q, %v) = %q: the OS would follow links in %q to %q", p, mode, res, look, real)
	}
}
