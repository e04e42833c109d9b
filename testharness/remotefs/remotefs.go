// Package remotefs is the private filesystem of the conformance harness's
// virtual remote host. It lives under a temporary root directory on this
// machine, but every path in its API is a path on the remote host
// ("/var/tmp/pikaci/..."); the root never appears in a result or an error.
//
// Symlinks are stored as real symlinks holding their target exactly as a case
// gives it. An absolute target is absolute on the remote host, so the
// operating system must never follow a link: every path is resolved by the
// harness's one resolver (vfs.Canonicalize and vfs.Entry over the root's
// entries, Lstat + Readlink), confined to the root, with at most
// vfs.MaxSymlinks links per lookup, and ".." at the remote "/" staying at
// "/". Only paths free of symlinks are handed to the operating system, and
// files are opened with O_NOFOLLOW as a second line of defence. *FS is a
// vfs.FS.
//
// Errors are *fs.PathError values naming the remote path, wrapping the
// system error (so errors.Is(err, fs.ErrNotExist) works).
package remotefs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// FS is a remote host's filesystem laid out under a root directory. It is
// safe for concurrent use.
type FS struct {
	root string // absolute, symlink-free host path
	mu   sync.RWMutex
}

// New returns the filesystem rooted at root, an existing directory on this
// machine, which becomes the remote "/".
func New(root string) (*FS, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("remotefs: root %q: %w", root, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("remotefs: root %q: %w", root, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("remotefs: root %q: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("remotefs: root %q: %w", root, syscall.ENOTDIR)
	}
	return &FS{root: real}, nil
}

// host returns the host path of a canonical remote path (absolute, clean,
// without "." or ".." components).
func (f *FS) host(canonical string) string {
	if canonical == "/" {
		return f.root
	}
	return f.root + canonical
}

// tree is the root's entries by canonical remote path, for the resolver.
// The caller holds f.mu.
type tree struct{ f *FS }

func (t tree) Lstat(p string) (fs.FileInfo, error) { return os.Lstat(t.f.host(p)) }
func (t tree) Readlink(p string) (string, error)   { return os.Readlink(t.f.host(p)) }

// canonicalize resolves p with vfs.Canonicalize. The caller holds f.mu.
func (f *FS) canonicalize(op, p string, mode vfs.Mode) (string, fs.FileInfo, error) {
	return vfs.Canonicalize(tree{f}, op, p, mode)
}

// entry resolves p with vfs.Entry. The caller holds f.mu.
func (f *FS) entry(op, p string) (string, fs.FileInfo, error) {
	return vfs.Entry(tree{f}, op, p)
}

// Canonicalize returns the canonical remote path of p, following every
// symlink, with the existence rules of mode. The result is absolute, clean
// and free of symlinks. A relative p is taken relative to the remote "/".
func (f *FS) Canonicalize(p string, mode vfs.Mode) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("canonicalize", p, mode)
	return res, err
}

// Resolve is GNU `readlink -f`: every component but the last must exist.
func (f *FS) Resolve(p string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("readlink", p, vfs.AllButLast)
	return res, err
}

// Realpath is `realpath` without options, which GNU defines as readlink -f.
func (f *FS) Realpath(p string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("realpath", p, vfs.AllButLast)
	return res, err
}

// mkdir is mkdir(2) on the remote: the parent must exist, the last component
// must not (not even as a dangling symlink). The caller holds f.mu for writing.
func (f *FS) mkdir(p string, perm fs.FileMode) error {
	res, fi, err := f.entry("mkdir", p)
	if err != nil {
		return err
	}
	if fi != nil || res == "/" {
		return vfs.PathError("mkdir", p, syscall.EEXIST)
	}
	if err := os.Mkdir(f.host(res), perm); err != nil {
		return vfs.PathError("mkdir", p, err)
	}
	return nil
}

// Mkdir creates one directory, like mkdir(2) (and `mkdir` without -p).
func (f *FS) Mkdir(p string, perm fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mkdir(p, perm)
}

// MkdirAll creates p and its missing parents with mode 0755, like GNU
// `mkdir -p`: for each prefix of p in turn it makes the directory, and an
// existing prefix is fine when it is, or links to, a directory. Symlinked
// parents are followed, confined to the root. A component that is a file or a
// dangling symlink is an error.
func (f *FS) MkdirAll(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mkdirAll(p)
}

func (f *FS) mkdirAll(p string) error {
	if p == "" {
		return vfs.PathError("mkdir", p, syscall.ENOENT)
	}
	for _, prefix := range prefixes(p) {
		err := f.mkdir(prefix, 0o755)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EEXIST) {
			return vfs.PathError("mkdir", p, err)
		}
		_, fi, serr := f.canonicalize("mkdir", prefix, vfs.Existing)
		if serr != nil && prefix != p {
			return vfs.PathError("mkdir", p, serr)
		}
		if fi == nil || !fi.IsDir() {
			if prefix == p {
				return vfs.PathError("mkdir", p, syscall.EEXIST)
			}
			return vfs.PathError("mkdir", p, syscall.ENOTDIR)
		}
	}
	return nil
}

// mkdirParents makes the parent directory of an entry about to be created:
// a parent that exists but is no directory makes the entry's path ENOTDIR.
func (f *FS) mkdirParents(parent string) error {
	err := f.mkdirAll(parent)
	if errors.Is(err, syscall.EEXIST) {
		return vfs.PathError("mkdir", parent, syscall.ENOTDIR)
	}
	return err
}

// prefixes returns the raw prefixes of p that end at a component:
// "/a//b/" → "/a", "/a//b".
func prefixes(p string) []string {
	var out []string
	i := 0
	for i < len(p) {
		for i < len(p) && p[i] == '/' {
			i++
		}
		if i == len(p) {
			break
		}
		for i < len(p) && p[i] != '/' {
			i++
		}
		out = append(out, p[:i])
	}
	if len(out) == 0 {
		out = append(out, p) // "/" or "///"
	}
	return out
}

// Symlink creates linkPath holding target verbatim (the order of
// symlink(2)), creating linkPath's missing parent directories first. An
// absolute target is absolute on the remote host; a relative one is
// relative to the link's directory.
func (f *FS) Symlink(target, linkPath string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, name := vfs.SplitLast(linkPath)
	if name == "" || name == "." || name == ".." {
		return vfs.PathError("symlink", linkPath, syscall.EEXIST)
	}
	if err := f.mkdirParents(parent); err != nil {
		return vfs.PathError("symlink", linkPath, err)
	}
	res, fi, err := f.entry("symlink", linkPath)
	if err != nil {
		return err
	}
	if fi != nil {
		return vfs.PathError("symlink", linkPath, syscall.EEXIST)
	}
	if err := os.Symlink(target, f.host(res)); err != nil {
		return vfs.PathError("symlink", linkPath, err)
	}
	return nil
}

// WriteFile writes data to the file p (mode 0644), creating p's missing
// parent directories first. A symlink at p is followed, confined.
func (f *FS) WriteFile(p string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, name := vfs.SplitLast(p)
	if name == "" || name == "." || name == ".." {
		return vfs.PathError("write", p, syscall.EISDIR)
	}
	if err := f.mkdirParents(parent); err != nil {
		return vfs.PathError("write", p, err)
	}
	w, err := f.openFile("write", p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return vfs.PathError("write", p, err)
	}
	if err := w.Close(); err != nil {
		return vfs.PathError("write", p, err)
	}
	return nil
}

// File is an open remote file. It hides the host file so the root stays
// private.
type File = io.ReadWriteCloser

type file struct {
	f    *os.File
	name string
}

func (x *file) Read(b []byte) (int, error) {
	n, err := x.f.Read(b)
	if err != nil && err != io.EOF {
		err = vfs.PathError("read", x.name, err)
	}
	return n, err
}

func (x *file) Write(b []byte) (int, error) {
	n, err := x.f.Write(b)
	if err != nil {
		err = vfs.PathError("write", x.name, err)
	}
	return n, err
}

func (x *file) Close() error {
	if err := x.f.Close(); err != nil {
		return vfs.PathError("close", x.name, err)
	}
	return nil
}

// OpenFile opens the remote file p like open(2) with flag and perm, following
// symlinks (confined). With O_CREATE a missing last component is created; its
// parent must exist. Errors are *fs.PathError values.
func (f *FS) OpenFile(p string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_CREATE != 0 || flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		f.mu.Lock()
		defer f.mu.Unlock()
	} else {
		f.mu.RLock()
		defer f.mu.RUnlock()
	}
	return f.openFile("open", p, flag, perm)
}

func (f *FS) openFile(op, p string, flag int, perm fs.FileMode) (File, error) {
	mode := vfs.Existing
	if flag&os.O_CREATE != 0 {
		mode = vfs.AllButLast
	}
	res, fi, err := f.canonicalize(op, p, mode)
	if err != nil {
		return nil, err
	}
	if fi == nil && strings.HasSuffix(p, "/") {
		return nil, vfs.PathError(op, p, syscall.EISDIR)
	}
	if fi != nil && fi.IsDir() && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, vfs.PathError(op, p, syscall.EISDIR)
	}
	h, err := os.OpenFile(f.host(res), flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, vfs.PathError(op, p, err)
	}
	return &file{f: h, name: p}, nil
}

// ReadFile returns the content of the remote file p, following symlinks.
func (f *FS) ReadFile(p string) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.canonicalize("read", p, vfs.Existing)
	if err != nil {
		return nil, err
	}
	if fi != nil && fi.IsDir() {
		return nil, vfs.PathError("read", p, syscall.EISDIR)
	}
	h, err := os.OpenFile(f.host(res), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, vfs.PathError("read", p, err)
	}
	defer h.Close()
	b, err := io.ReadAll(h)
	if err != nil {
		return nil, vfs.PathError("read", p, err)
	}
	return b, nil
}

// Readlink returns the target of the symlink p verbatim, like readlink(2).
func (f *FS) Readlink(p string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.entry("readlink", p)
	if err != nil {
		return "", err
	}
	if fi == nil {
		return "", vfs.PathError("readlink", p, syscall.ENOENT)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", vfs.PathError("readlink", p, syscall.EINVAL)
	}
	t, err := os.Readlink(f.host(res))
	if err != nil {
		return "", vfs.PathError("readlink", p, err)
	}
	return t, nil
}

func remoteInfo(canonical string, fi fs.FileInfo) fs.FileInfo {
	_, name := vfs.SplitLast(canonical)
	if name == "" {
		name = "/"
	}
	return vfs.Named(fi, name)
}

// Stat is stat(2) on the remote: symlinks are followed, confined.
func (f *FS) Stat(p string) (fs.FileInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.canonicalize("stat", p, vfs.Existing)
	if err != nil {
		return nil, err
	}
	if fi == nil {
		return nil, vfs.PathError("stat", p, syscall.ENOENT)
	}
	return remoteInfo(res, fi), nil
}

// Lstat is lstat(2) on the remote: a final symlink is reported, not followed.
func (f *FS) Lstat(p string) (fs.FileInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.entry("lstat", p)
	if err != nil {
		return nil, err
	}
	if fi == nil {
		return nil, vfs.PathError("lstat", p, syscall.ENOENT)
	}
	return remoteInfo(res, fi), nil
}

// Exists reports whether p exists, following symlinks (like `test -e`).
func (f *FS) Exists(p string) bool {
	_, err := f.Stat(p)
	return err == nil
}

// IsDir reports whether p is, or links to, a directory (like `test -d`).
func (f *FS) IsDir(p string) bool {
	fi, err := f.Stat(p)
	return err == nil && fi.IsDir()
}

// ReadDir lists the directory p (following symlinks), sorted by name.
func (f *FS) ReadDir(p string) ([]fs.DirEntry, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.canonicalize("readdir", p, vfs.Existing)
	if err != nil {
		return nil, err
	}
	if fi == nil || !fi.IsDir() {
		return nil, vfs.PathError("readdir", p, syscall.ENOTDIR)
	}
	ents, err := os.ReadDir(f.host(res))
	if err != nil {
		return nil, vfs.PathError("readdir", p, err)
	}
	return ents, nil
}

// Snapshot describes every entry under the root, keyed by remote path:
// "dir", "file sha256:<hex>" or "symlink -> <target>" (other kinds as
// "other <mode>"). Two equal snapshots mean nothing was created, removed or
// rewritten in between.
func (f *FS) Snapshot() (map[string]string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[string]string{}
	err := filepath.WalkDir(f.root, func(hp string, d fs.DirEntry, err error) error {
		rp := "/" + strings.TrimPrefix(strings.TrimPrefix(hp, f.root), "/")
		if err != nil {
			return vfs.PathError("snapshot", rp, err)
		}
		switch t := d.Type(); {
		case t.IsDir():
			out[rp] = "dir"
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return vfs.PathError("snapshot", rp, err)
			}
			out[rp] = "symlink -> " + target
		case t.IsRegular():
			h, err := os.OpenFile(hp, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			if err != nil {
				return vfs.PathError("snapshot", rp, err)
			}
			sum := sha256.New()
			_, err = io.Copy(sum, h)
			h.Close()
			if err != nil {
				return vfs.PathError("snapshot", rp, err)
			}
			out[rp] = "file sha256:" + hex.EncodeToString(sum.Sum(nil))
		default:
			out[rp] = "other " + t.String()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Paths returns the snapshot's keys in order, for messages.
func Paths(snapshot map[string]string) []string {
	keys := make([]string, 0, len(snapshot))
	for k := range snapshot {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
