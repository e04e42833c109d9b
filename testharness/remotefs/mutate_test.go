package remotefs

import (
	"errors"
	"io/fs"
	"syscall"
	"testing"
)

func TestMutations(t *testing.T) {
	f, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.MkdirAll("/src/sub"))
	must(f.WriteFile("/src/sub/file", []byte("x")))
	must(f.MkdirAll("/empty"))
	must(f.MkdirAll("/full/x"))
	must(f.MkdirAll("/keep"))
	must(f.WriteFile("/keep/secret", []byte("s")))
	must(f.Symlink("/keep", "/src/link"))

	// rename(2): a directory replaces an empty one, not a full one.
	if err := f.Rename("/src", "/full"); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Errorf("rename onto a full dir: %v", err)
	}
	must(f.Rename("/src", "/empty"))
	if !f.Exists("/empty/sub/file") || f.Exists("/src") {
		t.Error("rename onto an empty dir did not move the tree")
	}

	// Create refuses an existing name, a symlink included, and sets the mode.
	if _, err := f.Create("/empty/link", 0o644); !errors.Is(err, fs.ErrExist) {
		t.Errorf("create over a symlink: %v", err)
	}
	w, err := f.Create("/empty/new", 0o4755)
	must(err)
	must(w.Close())
	if fi, _ := f.Lstat("/empty/new"); fi.Mode() != 0o755 {
		t.Errorf("created mode %v, want 0755", fi.Mode())
	}
	if err := f.Chmod("/empty/link", 0o700); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("chmod of a symlink: %v, want ELOOP", err)
	}

	// RemoveAll does not follow the link inside.
	must(f.RemoveAll("/empty"))
	if f.Exists("/empty") || !f.Exists("/keep/secret") {
		t.Error("RemoveAll removed the wrong things")
	}
	must(f.RemoveAll("/not")) // missing: fine, as rm -rf
}
