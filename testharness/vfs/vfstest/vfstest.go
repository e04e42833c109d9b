// Package vfstest checks a vfs.FS against one table of what Linux does
// with paths and symlinks, so that every filesystem model of the harness
// (the remote host's, a guest's own tree, a guest's disk devices) answers
// the same.
package vfstest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// Run lays a tree out under root (an existing directory of fsys, "" for
// "/") with fsys's own calls, then checks every lookup of the table.
func Run(t *testing.T, fsys vfs.FS, root string) {
	t.Helper()
	r := func(p string) string { return root + p }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fsys.Mkdir(r("/d"), 0o755))
	must(fsys.Mkdir(r("/d/sub"), 0o755))
	must(write(fsys, r("/d/f"), "data"))
	links := [][2]string{ // link, target
		{"/abs", r("/d")},
		{"/rel", "d/sub/.."},
		{"/d/sub/up", "../../../../../../.." + r("/d")},
		{"/dangling", r("/nope")},
		{"/loop1", r("/loop2")},
		{"/loop2", r("/loop1")},
		{"/tofile", r("/d/f")},
		{"/c0", r("/d")},
	}
	for i := 1; i <= vfs.MaxSymlinks; i++ { // /c40 is 40 links from /d
		links = append(links, [2]string{fmt.Sprintf("/c%d", i), r(fmt.Sprintf("/c%d", i-1))})
	}
	for _, l := range links {
		must(fsys.Symlink(l[1], r(l[0])))
	}
	// Linux refuses an empty target; a model that takes one must resolve
	// it to nothing.
	if err := fsys.Symlink("", r("/empty")); err != nil && !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("symlink with an empty target: %v", err)
	}

	tests := []struct{ op, path, want string }{
		{"stat", "/abs", "dir"},
		{"lstat", "/abs", "symlink"},
		{"lstat", "/abs/", "dir"},
		{"lstat", "/abs/.", "dir"},
		{"stat", "/abs/f", "file"},
		{"read", "/abs/f", "data:data"},
		{"read", "/rel/f", "data:data"},
		{"read", "/d/sub/up/f", "data:data"},
		{"read", "/../../..", "dir"},
		{"read", "/d/../../.." + r("/d/f"), "data:data"},
		{"stat", "/dangling", "no such file or directory"},
		{"lstat", "/dangling", "symlink"},
		{"readlink", "/dangling", "link:" + r("/nope")},
		{"readlink", "/d", "invalid argument"},
		{"stat", "/loop1", "too many levels of symbolic links"},
		{"stat", "/tofile/", "not a directory"},
		{"stat", "/d/f/x", "not a directory"},
		{"stat", "/d/f/..", "not a directory"},
		{"stat", "/c39", "dir"},
		{"stat", "/c40", "too many levels of symbolic links"},
		{"stat", "/empty", "no such file or directory"},
		{"readdir", "/abs", "entries:f,sub"},
		{"mkdir", "/abs/new", "made"},
		{"lstat", "/d/new", "dir"},
		{"mkdir", "/dangling", "file exists"},
		{"mkdir", "/d/f/x", "not a directory"},
		{"symlink", "/abs", "file exists"},
		{"create", "/dangling", "made"},
		{"lstat", "/nope", "file"},
		{"create", "/abs/", "is a directory"},
		{"remove", "/tofile", "removed"},
		{"remove", "/d", "directory not empty"},
	}
	for _, tt := range tests {
		got := do(fsys, tt.op, r(tt.path))
		if got != tt.want {
			t.Errorf("%s %s: got %q, want %q", tt.op, r(tt.path), got, tt.want)
		}
	}
	if fi, err := fsys.Lstat(r("/d/f")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("/d/f after removing a link to it: %v, %v", fi, err)
	}
}

func write(fsys vfs.FS, p, data string) error {
	f, err := fsys.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// do runs op on p and describes the outcome: a kind, data, a target, or
// the error's errno text.
func do(fsys vfs.FS, op, p string) string {
	describe := func(fi fs.FileInfo, err error) string {
		switch {
		case err != nil:
			return errText(err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return "symlink"
		case fi.IsDir():
			return "dir"
		case fi.Mode().IsRegular():
			return "file"
		}
		return fi.Mode().String()
	}
	switch op {
	case "stat":
		return describe(fsys.Stat(p))
	case "lstat":
		return describe(fsys.Lstat(p))
	case "readlink":
		t, err := fsys.Readlink(p)
		if err != nil {
			return errText(err)
		}
		return "link:" + t
	case "read":
		if fi, err := fsys.Stat(p); err != nil || fi.IsDir() {
			return describe(fi, err)
		}
		f, err := fsys.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			return errText(err)
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return errText(err)
		}
		return "data:" + string(b)
	case "readdir":
		ents, err := fsys.ReadDir(p)
		if err != nil {
			return errText(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		return "entries:" + strings.Join(names, ",")
	case "mkdir":
		return made(fsys.Mkdir(p, 0o755))
	case "symlink":
		return made(fsys.Symlink("/x", p))
	case "create":
		f, err := fsys.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err == nil {
			err = f.Close()
		}
		return made(err)
	case "remove":
		if err := fsys.Remove(p); err != nil {
			return errText(err)
		}
		if _, err := fsys.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Sprintf("still there: %v", err)
		}
		return "removed"
	}
	panic("vfstest: unknown op " + op)
}

func made(err error) string {
	if err != nil {
		return errText(err)
	}
	return "made"
}

func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT.Error()
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST.Error()
	}
	return err.Error()
}
