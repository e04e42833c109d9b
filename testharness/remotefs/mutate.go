package remotefs

import (
	"io/fs"
	"os"
	"syscall"

	"github.com/pikaci/vmexec/testharness/vfs"
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
		return nil, vfs.PathError("open", p, syscall.EEXIST)
	}
	h, err := os.OpenFile(f.host(res), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, vfs.PathError("open", p, err)
	}
	if err := h.Chmod(perm.Perm()); err != nil {
		h.Close()
		return nil, vfs.PathError("chmod", p, err)
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
		return vfs.PathError("chmod", p, syscall.ENOENT)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return vfs.PathError("chmod", p, syscall.ELOOP)
	}
	if err := os.Chmod(f.host(res), perm.Perm()); err != nil {
		return vfs.PathError("chmod", p, err)
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
		return vfs.PathError("rename", from, syscall.ENOENT)
	}
	dst, _, err := f.entry("rename", to)
	if err != nil {
		return err
	}
	if src == "/" || dst == "/" {
		return vfs.PathError("rename", from, syscall.EBUSY)
	}
	// syscall.Rename, not os.Rename: Go refuses any existing directory as
	// the destination; the kernel lets a directory replace an empty one.
	if err := syscall.Rename(f.host(src), f.host(dst)); err != nil {
		return vfs.PathError("rename", from, err)
	}
	return nil
}

// RemoveAll removes p and everything below it, like `rm -rf`: a final
// symlink is removed, not followed, and no link below p is followed. A
// missing p is not an error.
func (f *FS) RemoveAll(p string) error {
	return f.remove(p, true, os.RemoveAll)
}

// Remove removes one file, symlink or empty directory, like unlink(2) and
// rmdir(2): a final symlink is removed, not followed.
func (f *FS) Remove(p string) error {
	return f.remove(p, false, os.Remove)
}

// remove removes the entry p names (its last component not followed) with
// rm, given its host path; missingOK says a missing p is no error.
func (f *FS) remove(p string, missingOK bool, rm func(string) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	res, fi, err := f.entry("remove", p)
	switch {
	case err != nil:
		return err
	case fi == nil && missingOK:
		return nil
	case fi == nil:
		return vfs.PathError("remove", p, syscall.ENOENT)
	case res == "/":
		return vfs.PathError("remove", p, syscall.EBUSY)
	}
	if err := rm(f.host(res)); err != nil {
		return vfs.PathError("remove", p, err)
	}
	return nil
}
