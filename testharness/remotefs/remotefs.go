// Package remotefs is the private filesystem of the conformance harness's
// virtual remote host. It lives under a temporary root directory on this
// machine, but every path in its API is a path on the remote host
// ("/var/tmp/pikaci/..."); the root never appears in a result or an error.
//
// Symlinks are stored as real symlinks holding their target exactly as a case
// gives it. An absolute target is absolute on the remote host, so the
// operating system must never follow a link: every path is resolved here,
// component by component (Lstat + Readlink), confined to the root, with at
// most [MaxSymlinks] links per lookup, and ".." at the remote "/" staying at
// "/". Only paths free of symlinks are handed to the operating system, and
// files are opened with O_NOFOLLOW as a second line of defence.
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
)

// MaxSymlinks is how many symlinks one lookup may follow before it fails with
// ELOOP, as on Linux. (GNU readlink detects true loops instead of counting, so
// it would resolve a chain of more than 40 distinct links; the kernel, and so
// every command that then uses the path, would not.) In Missing mode a lookup
// that reaches the limit keeps the link as it is and goes on, as readlink -m
// does for a loop.
const MaxSymlinks = 40

// Mode says which components of a path must exist when it is canonicalized,
// as the options of GNU readlink and realpath do.
type Mode int

const (
	// AllButLast: every component but the last must exist
	// (readlink -f, realpath).
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

// pathErr builds the error for remote path p, keeping only the system error
// of err so no host path leaks into the message.
func pathErr(op, p string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return &fs.PathError{Op: op, Path: p, Err: errno}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = fs.ErrNotExist
	case errors.Is(err, fs.ErrExist):
		err = fs.ErrExist
	case errors.Is(err, fs.ErrPermission):
		err = fs.ErrPermission
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
	}
	return &fs.PathError{Op: op, Path: p, Err: err}
}

// host returns the host path of a canonical remote path (absolute, clean,
// without "." or ".." components).
func (f *FS) host(canonical string) string {
	if canonical == "/" {
		return f.root
	}
	return f.root + canonical
}

func join(comps []string) string {
	return "/" + strings.Join(comps, "/")
}

// hasComponent reports whether rest, the unparsed remainder of a path, still
// names a component (anything but slashes).
func hasComponent(rest string) bool {
	return strings.TrimLeft(rest, "/") != ""
}

// canonicalize resolves p like GNU canonicalize_filename_mode: it returns the
// canonical remote path and, when the result exists, its Lstat info (nil when
// the last component is missing). A relative p is relative to the remote "/".
// The caller holds f.mu.
func (f *FS) canonicalize(op, p string, mode Mode) (string, fs.FileInfo, error) {
	if p == "" {
		return "", nil, pathErr(op, p, syscall.ENOENT)
	}
	var dest []string
	rest := p
	links := 0
	var last fs.FileInfo
	// blind > 0: dest[blind-1] is a link kept unresolved (Missing mode), so
	// the OS must not look at any path below it: it would follow the link.
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
		fi, err := os.Lstat(f.host(cur))
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
				return "", nil, pathErr(op, p, syscall.ELOOP)
			}
			target, err := os.Readlink(f.host(cur))
			if err != nil {
				return "", nil, pathErr(op, p, err)
			}
			if target == "" {
				return "", nil, pathErr(op, p, syscall.ENOENT)
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
				return "", nil, pathErr(op, p, syscall.ENOTDIR)
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
			return "", nil, pathErr(op, p, syscall.ENOENT)
		default:
			if mode == Missing && errors.Is(err, syscall.ENOTDIR) {
				last = nil
				continue
			}
			return "", nil, pathErr(op, p, err)
		}
	}
	res := join(dest)
	if last == nil && blind == 0 {
		// Refresh: ".." or a followed link may end on an existing entry.
		fi, err := os.Lstat(f.host(res))
		if err == nil {
			last = fi
		}
	}
	return res, last, nil
}

// Canonicalize returns the canonical remote path of p, following every
// symlink, with the existence rules of mode. The result is absolute, clean
// and free of symlinks. A relative p is taken relative to the remote "/".
func (f *FS) Canonicalize(p string, mode Mode) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("canonicalize", p, mode)
	return res, err
}

// Resolve is GNU `readlink -f`: every component but the last must exist.
func (f *FS) Resolve(p string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("readlink", p, AllButLast)
	return res, err
}

// Realpath is `realpath` without options, which GNU defines as readlink -f.
func (f *FS) Realpath(p string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, _, err := f.canonicalize("realpath", p, AllButLast)
	return res, err
}

// splitLast splits p into the raw parent path and the last component, without
// cleaning (a lexical clean would be wrong once symlinks are involved).
// Trailing slashes are dropped. The last component of "/" is "".
func splitLast(p string) (parent, name string) {
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

// entry resolves p the way the kernel resolves the target of a syscall that
// does not follow a final symlink (lstat, mkdir, symlink): the parent must
// exist and is followed; the last component is taken as is, unless p ends in
// a slash, which asks for the directory a final symlink points to. It returns
// the canonical remote path of the entry and its Lstat info (nil if missing).
// The caller holds f.mu.
func (f *FS) entry(op, p string) (string, fs.FileInfo, error) {
	if p == "" {
		return "", nil, pathErr(op, p, syscall.ENOENT)
	}
	parent, name := splitLast(p)
	if name == "" || name == "." || name == ".." {
		return f.canonicalize(op, p, Existing)
	}
	dir, dfi, err := f.canonicalize(op, parent, Existing)
	if err != nil {
		return "", nil, pathErr(op, p, err)
	}
	if dfi == nil || !dfi.IsDir() {
		return "", nil, pathErr(op, p, syscall.ENOTDIR)
	}
	res := strings.TrimSuffix(dir, "/") + "/" + name
	fi, err := os.Lstat(f.host(res))
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil, nil
	}
	if err != nil {
		return "", nil, pathErr(op, p, err)
	}
	if strings.HasSuffix(p, "/") {
		if fi.Mode()&fs.ModeSymlink != 0 {
			if res, fi, err = f.canonicalize(op, p, Existing); err != nil {
				return "", nil, err
			}
		}
		if fi == nil || !fi.IsDir() {
			return "", nil, pathErr(op, p, syscall.ENOTDIR)
		}
	}
	return res, fi, nil
}

// mkdir is mkdir(2) on the remote: the parent must exist, the last component
// must not (not even as a dangling symlink). The caller holds f.mu for writing.
func (f *FS) mkdir(p string, perm fs.FileMode) error {
	res, fi, err := f.entry("mkdir", p)
	if err != nil {
		return err
	}
	if fi != nil || res == "/" {
		return pathErr("mkdir", p, syscall.EEXIST)
	}
	if err := os.Mkdir(f.host(res), perm); err != nil {
		return pathErr("mkdir", p, err)
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
		return pathErr("mkdir", p, syscall.ENOENT)
	}
	for _, prefix := range prefixes(p) {
		err := f.mkdir(prefix, 0o755)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EEXIST) {
			return pathErr("mkdir", p, err)
		}
		_, fi, serr := f.canonicalize("mkdir", prefix, Existing)
		if serr != nil && prefix != p {
			return pathErr("mkdir", p, serr)
		}
		if fi == nil || !fi.IsDir() {
			if prefix == p {
				return pathErr("mkdir", p, syscall.EEXIST)
			}
			return pathErr("mkdir", p, syscall.ENOTDIR)
		}
	}
	return nil
}

// mkdirParents makes the parent directory of an entry about to be created:
// a parent that exists but is no directory makes the entry's path ENOTDIR.
func (f *FS) mkdirParents(parent string) error {
	err := f.mkdirAll(parent)
	if errors.Is(err, syscall.EEXIST) {
		return pathErr("mkdir", parent, syscall.ENOTDIR)
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

// Symlink creates linkPath holding target verbatim, creating linkPath's
// missing parent directories first. An absolute target is absolute on the
// remote host; a relative one is relative to the link's directory.
func (f *FS) Symlink(linkPath, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, name := splitLast(linkPath)
	if name == "" || name == "." || name == ".." {
		return pathErr("symlink", linkPath, syscall.EEXIST)
	}
	if err := f.mkdirParents(parent); err != nil {
		return pathErr("symlink", linkPath, err)
	}
	res, fi, err := f.entry("symlink", linkPath)
	if err != nil {
		return err
	}
	if fi != nil {
		return pathErr("symlink", linkPath, syscall.EEXIST)
	}
	if err := os.Symlink(target, f.host(res)); err != nil {
		return pathErr("symlink", linkPath, err)
	}
	return nil
}

// WriteFile writes data to the file p (mode 0644), creating p's missing
// parent directories first. A symlink at p is followed, confined.
func (f *FS) WriteFile(p string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	parent, name := splitLast(p)
	if name == "" || name == "." || name == ".." {
		return pathErr("write", p, syscall.EISDIR)
	}
	if err := f.mkdirParents(parent); err != nil {
		return pathErr("write", p, err)
	}
	w, err := f.openFile("write", p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return pathErr("write", p, err)
	}
	if err := w.Close(); err != nil {
		return pathErr("write", p, err)
	}
	return nil
}

// File is an open remote file. It hides the host file so the root stays
// private.
type File interface {
	io.ReadWriteCloser
}

type file struct {
	f    *os.File
	name string
}

func (x *file) Read(b []byte) (int, error) {
	n, err := x.f.Read(b)
	if err != nil && err != io.EOF {
		err = pathErr("read", x.name, err)
	}
	return n, err
}

func (x *file) Write(b []byte) (int, error) {
	n, err := x.f.Write(b)
	if err != nil {
		err = pathErr("write", x.name, err)
	}
	return n, err
}

func (x *file) Close() error {
	if err := x.f.Close(); err != nil {
		return pathErr("close", x.name, err)
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
	mode := Existing
	if flag&os.O_CREATE != 0 {
		mode = AllButLast
	}
	res, fi, err := f.canonicalize(op, p, mode)
	if err != nil {
		return nil, err
	}
	if fi == nil && strings.HasSuffix(p, "/") {
		return nil, pathErr(op, p, syscall.EISDIR)
	}
	if fi != nil && fi.IsDir() && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, pathErr(op, p, syscall.EISDIR)
	}
	h, err := os.OpenFile(f.host(res), flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, pathErr(op, p, err)
	}
	return &file{f: h, name: p}, nil
}

// ReadFile returns the content of the remote file p, following symlinks.
func (f *FS) ReadFile(p string) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.canonicalize("read", p, Existing)
	if err != nil {
		return nil, err
	}
	if fi != nil && fi.IsDir() {
		return nil, pathErr("read", p, syscall.EISDIR)
	}
	h, err := os.OpenFile(f.host(res), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, pathErr("read", p, err)
	}
	defer h.Close()
	b, err := io.ReadAll(h)
	if err != nil {
		return nil, pathErr("read", p, err)
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
		return "", pathErr("readlink", p, syscall.ENOENT)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", pathErr("readlink", p, syscall.EINVAL)
	}
	t, err := os.Readlink(f.host(res))
	if err != nil {
		return "", pathErr("readlink", p, err)
	}
	return t, nil
}

// fileInfo reports a host entry under its remote name.
type fileInfo struct {
	fs.FileInfo
	name string
}

func (i fileInfo) Name() string { return i.name }

func remoteInfo(canonical string, fi fs.FileInfo) fs.FileInfo {
	_, name := splitLast(canonical)
	if name == "" {
		name = "/"
	}
	return fileInfo{FileInfo: fi, name: name}
}

// Stat is stat(2) on the remote: symlinks are followed, confined.
func (f *FS) Stat(p string) (fs.FileInfo, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	res, fi, err := f.canonicalize("stat", p, Existing)
	if err != nil {
		return nil, err
	}
	if fi == nil {
		return nil, pathErr("stat", p, syscall.ENOENT)
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
		return nil, pathErr("lstat", p, syscall.ENOENT)
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
	res, fi, err := f.canonicalize("readdir", p, Existing)
	if err != nil {
		return nil, err
	}
	if fi == nil || !fi.IsDir() {
		return nil, pathErr("readdir", p, syscall.ENOTDIR)
	}
	ents, err := os.ReadDir(f.host(res))
	if err != nil {
		return nil, pathErr("readdir", p, err)
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
			return pathErr("snapshot", rp, err)
		}
		switch t := d.Type(); {
		case t.IsDir():
			out[rp] = "dir"
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return pathErr("snapshot", rp, err)
			}
			out[rp] = "symlink -> " + target
		case t.IsRegular():
			h, err := os.OpenFile(hp, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			if err != nil {
				return pathErr("snapshot", rp, err)
			}
			sum := sha256.New()
			_, err = io.Copy(sum, h)
			h.Close()
			if err != nil {
				return pathErr("snapshot", rp, err)
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
