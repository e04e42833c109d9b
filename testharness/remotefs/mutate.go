package remotefs

import (
	"io/fs"
	"os"
	"syscall"
)

// Create makes the new regular file p with exactly the permission bits
// perm (no umask), like open(2) with O_CREAT|O_EXCL|O_NOFOLLOW: the parent
// must exist (symlinks in it are followed, confined), the last component
// must not, not even as a symlink.
func (f *FS) Create(p string, perm fs.FileMode) (File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res, fi, err := f.entry("open", p)
	if err != nil {
		return nil, err
	}
	if fi != nil || res == "/" {
		return nil, pathErr("open", p, syscall.EEXIST)
	}
	h, err := os.OpenFile(f.host(res), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, pathErr("open", p, err)
	}
	if err := h.Chmod(perm.Perm()); err != nil {
		h.Close()
		return nil, pathErr("chmod", p, err)
	}
	return &file{f: h, name: p}, nil
}

// Chmod sets the permission bits of p, which must not be a symlink (it is
// not followed: chmod on a link is refused with ELOOP, as fchmodat with
// AT_SYMLINK_NOFOLLOW does on Linux).
func (f *FS) Chmod(p string, perm fs.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	res, fi, err := f.entry("chmod", p)
	if err != nil {
		return err
	}
	if fi == nil {
		return pathErr("chmod", p, syscall.ENOENT)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return pathErr("chmod", p, syscall.ELOOP)
	}
	if err := os.Chmod(f.host(res), perm.Perm()); err != nil {
		return pathErr("chmod", p, err)
	}
	return nil
}

// Rename is rename(2) on the remote: neither final component is followed;
// a directory may replace an empty directory, nothing else that exists
// (ENOTEMPTY, EISDIR, ENOTDIR as the kernel says).
func (f *FS) Rename(from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	src, sfi, err := f.entry("rename", from)
	if err != nil {
		return err
	}
	if sfi == nil {
		return pathErr("rename", from, syscall.ENOENT)
	}
	dst, _, err := f.entry("rename", to)
	if err != nil {
		return err
	}
	if src == "/" || dst == "/" {
		return pathErr("rename", from, syscall.EBUSY)
	}
	// syscall.Rename, not os.Rename: Go refuses any existing directory as
	// the destination; the kernel lets a directory replace an empty one.
	if err := syscall.Rename(f.host(src), f.host(dst)); err != nil {
		return pathErr("rename", from, err)
	}
	return nil
}

// RemoveAll removes p and everything below it, like `rm -rf`: a final
// symlink is removed, not followed, and no link below p is followed. A
// missing p is not an error.
func (f *FS) RemoveAll(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	res, fi, err := f.entry("remove", p)
	if err != nil {
		return err
	}
	if fi == nil {
		return nil
	}
	if res == "/" {
		return pathErr("remove", p, syscall.EBUSY)
	}
	if err := os.RemoveAll(f.host(res)); err != nil {
		return pathErr("remove", p, err)
	}
	return nil
}
