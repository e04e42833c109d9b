// Package vfs is the one filesystem model of the harness's virtual
// machines: the interface every virtual filesystem offers (the remote
// host's private tree, a guest's own tree, a guest's view with its disk
// devices mounted) and the one path resolver they all walk symlinks with.
//
// A Tree is a store of canonical paths (absolute, clean, free of symlinks
// but maybe the last component) that never follows a link; Canonicalize
// and Entry resolve any path over it, component by component, as the
// kernel and GNU readlink do, so an absolute link target stays inside the
// tree. A fix to resolution made here reaches every virtual machine.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"syscall"
)

// FS is the filesystem a virtual process sees. Paths are absolute and not
// cleaned ("a/../b" must be resolved by the FS, following symlinks as the
// kernel does). Errors are *fs.PathError values wrapping a syscall.Errno,
// so programs can print the C library's message.
type FS interface {
	OpenFile(path string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error)
	Stat(path string) (fs.FileInfo, error)
	Lstat(path string) (fs.FileInfo, error)
	ReadDir(path string) ([]fs.DirEntry, error)
	Mkdir(path string, perm fs.FileMode) error
	// Symlink makes path a symbolic link holding target verbatim, as
	// symlink(2) and os.Symlink do.
	Symlink(target, path string) error
	Readlink(path string) (string, error)
	// Remove removes one file, link or empty directory (unlink(2),
	// rmdir(2)); a final symlink is removed, not followed.
	Remove(path string) error
}

// FIFOer is implemented by filesystems that can make named pipes (mkfifo).
type FIFOer interface {
	Mkfifo(path string, perm fs.FileMode) error
}

// Attrer is implemented by filesystems that can change a file's mode (its
// permission, set-id and sticky bits) and owner (-1 keeps an id); both
// follow a symlink, as chmod(2) and chown(2) do (chmod, chown).
type Attrer interface {
	Chmod(path string, mode fs.FileMode) error
	Chown(path string, uid, gid int) error
}

// MaxSymlinks is how many symlinks one lookup may follow before it fails
// with ELOOP, as on Linux. (GNU readlink detects true loops instead of
// counting, so it would resolve a chain of more than 40 distinct links;
// the kernel, and so every command that then uses the path, would not.)
// In Missing mode a lookup that reaches the limit keeps the link as it is
// and goes on, as readlink -m does for a loop.
const MaxSymlinks = 40

// Mode says which components of a path must exist when it is
// canonicalized, as the options of GNU readlink and realpath do.
type Mode int

const (
	// AllButLast: every component but the last must exist
	// (readlink -f, realpath, and the kernel for a path it follows).
	AllButLast Mode = iota
	// Existing: every component must exist (readlink -e, realpath -e).
	Existing
	// Missing: no component need exist (readlink -m, realpath -m).
	Missing
)

func (m Mode) String() string {
	switch m {
	case AllButLast:
		return "all-but-last"
	case Existing:
		return "existing"
	case Missing:
		return "missing"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Tree is a store of entries by canonical path that never follows a
// symlink: Lstat and Readlink look at exactly the entry named.
type Tree interface {
	Lstat(canonical string) (fs.FileInfo, error)
	Readlink(canonical string) (string, error)
}

// PathError builds the error for path p, keeping only the system error of
// err so that no path of the machine behind a tree leaks into a message:
// an errno, one of fs's sentinel errors, or EIO for anything else.
func PathError(op, p string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		err = errno
	case errors.Is(err, fs.ErrNotExist):
		err = fs.ErrNotExist
	case errors.Is(err, fs.ErrExist):
		err = fs.ErrExist
	case errors.Is(err, fs.ErrPermission):
		err = fs.ErrPermission
	default:
		err = syscall.EIO
	}
	return &fs.PathError{Op: op, Path: p, Err: err}
}

func join(comps []string) string {
	return "/" + strings.Join(comps, "/")
}

// hasComponent reports whether rest, the unparsed remainder of a path,
// still names a component (anything but slashes).
func hasComponent(rest string) bool {
	return strings.TrimLeft(rest, "/") != ""
}

// Canonicalize resolves p like GNU canonicalize_filename_mode: it returns
// the canonical path and, when the result exists, its Lstat info from t
// (nil when the last component is missing). Every symlink is followed
// inside t; ".." at "/" stays at "/"; a relative p is relative to "/".
// Errors are PathError values for op and p.
func Canonicalize(t Tree, op, p string, mode Mode) (string, fs.FileInfo, error) {
	if p == "" {
		return "", nil, PathError(op, p, syscall.ENOENT)
	}
	var dest []string
	rest := p
	links := 0
	var last fs.FileInfo
	// blind > 0: dest[blind-1] is a link kept unresolved (Missing mode), so
	// the tree must not be asked about any path below it.
	blind := 0
	for {
		rest = strings.TrimLeft(rest, "/")
		if rest == "" {
			break
		}
		comp := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			comp, rest = rest[:i], rest[i:]
		} else {
			rest = ""
		}
		switch comp {
		case ".":
			continue
		case "..":
			if len(dest) > 0 {
				dest = dest[:len(dest)-1]
			}
			if len(dest) < blind {
				blind = 0
			}
			// The parent of an existing directory exists and is a
			// directory (or we are at "/").
			last = nil
			continue
		}
		dest = append(dest, comp)
		if blind > 0 {
			continue // only in Missing mode
		}
		cur := join(dest)
		fi, err := t.Lstat(cur)
		switch {
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			links++
			if links > MaxSymlinks {
				if mode == Missing {
					// GNU readlink -m keeps a looping link as it is.
					last = nil
					blind = len(dest)
					continue
				}
				return "", nil, PathError(op, p, syscall.ELOOP)
			}
			target, err := t.Readlink(cur)
			if err != nil {
				return "", nil, PathError(op, p, err)
			}
			if target == "" {
				return "", nil, PathError(op, p, syscall.ENOENT)
			}
			if strings.HasPrefix(target, "/") {
				dest = dest[:0]
			} else {
				dest = dest[:len(dest)-1]
			}
			rest = target + rest
			last = nil
		case err == nil:
			last = fi
			if !fi.IsDir() && strings.Contains(rest, "/") {
				// Something follows a non-directory: "file/x",
				// "file/..", or a trailing slash.
				if mode == Missing {
					last = nil
					continue
				}
				return "", nil, PathError(op, p, syscall.ENOTDIR)
			}
		case errors.Is(err, fs.ErrNotExist):
			last = nil
			switch mode {
			case Missing:
				continue
			case AllButLast:
				if !hasComponent(rest) {
					continue
				}
			}
			return "", nil, PathError(op, p, syscall.ENOENT)
		default:
			if mode == Missing && errors.Is(err, syscall.ENOTDIR) {
				last = nil
				continue
			}
			return "", nil, PathError(op, p, err)
		}
	}
	res := join(dest)
	if last == nil && blind == 0 {
		// Refresh: ".." or a followed link may end on an existing entry.
		if fi, err := t.Lstat(res); err == nil {
			last = fi
		}
	}
	return res, last, nil
}

// SplitLast splits p into the raw parent path and the last component,
// without cleaning (a lexical clean would be wrong once symlinks are
// involved). Trailing slashes are dropped. The last component of "/" is "".
func SplitLast(p string) (parent, name string) {
	t := strings.TrimRight(p, "/")
	if t == "" {
		if p == "" {
			return "", ""
		}
		return "/", ""
	}
	i := strings.LastIndexByte(t, '/')
	switch {
	case i < 0:
		return ".", t
	case i == 0:
		return "/", t[1:]
	default:
		return t[:i], t[i+1:]
	}
}

// Entry resolves p the way the kernel resolves the target of a syscall
// that does not follow a final symlink (lstat, mkdir, symlink, unlink):
// the parent must exist and is followed; the last component is taken as
// is, unless p ends in a slash, which asks for the directory a final
// symlink points to. It returns the canonical path of the entry and its
// Lstat info (nil if missing).
func Entry(t Tree, op, p string) (string, fs.FileInfo, error) {
	if p == "" {
		return "", nil, PathError(op, p, syscall.ENOENT)
	}
	parent, name := SplitLast(p)
	if name == "" || name == "." || name == ".." {
		return Canonicalize(t, op, p, Existing)
	}
	dir, dfi, err := Canonicalize(t, op, parent, Existing)
	if err != nil {
		return "", nil, PathError(op, p, err)
	}
	if dfi == nil || !dfi.IsDir() {
		return "", nil, PathError(op, p, syscall.ENOTDIR)
	}
	res := strings.TrimSuffix(dir, "/") + "/" + name
	fi, err := t.Lstat(res)
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil, nil
	}
	if err != nil {
		return "", nil, PathError(op, p, err)
	}
	if strings.HasSuffix(p, "/") {
		if fi.Mode()&fs.ModeSymlink != 0 {
			if res, fi, err = Canonicalize(t, op, p, Existing); err != nil {
				return "", nil, err
			}
		}
		if fi == nil || !fi.IsDir() {
			return "", nil, PathError(op, p, syscall.ENOTDIR)
		}
	}
	return res, fi, nil
}

// Abs makes p absolute against dir, without cleaning: "link/.." must reach
// the resolver as it is.
func Abs(dir, p string) string {
	if p == "" || strings.HasPrefix(p, "/") {
		return p
	}
	return strings.TrimSuffix(dir, "/") + "/" + p
}

// Strerror renders err as the C library does ("No such file or
// directory").
func Strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:]
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Named reports fi under name (a host entry under its name in the virtual
// machine).
func Named(fi fs.FileInfo, name string) fs.FileInfo {
	return named{fi, name}
}

type named struct {
	fs.FileInfo
	name string
}

func (n named) Name() string { return n.name }

// Bits are the mode bits chmod(2) sets: permissions, set-id and sticky.
const Bits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
