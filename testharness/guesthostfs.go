package testharness

import (
	"io"
	"io/fs"
	"syscall"

	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotefs"
)

// remoteHostFS gives the fake Incus the virtual remote's filesystem, where
// the disk devices of its guests find their sources: a job's writes to a
// read-write device land in the remote's private tree, as on a real host.
type remoteHostFS struct{ fs *remotefs.FS }

var _ incusfake.HostFS = remoteHostFS{}

func (h remoteHostFS) Lstat(p string) (fs.FileInfo, error)     { return h.fs.Lstat(p) }
func (h remoteHostFS) Readlink(p string) (string, error)       { return h.fs.Readlink(p) }
func (h remoteHostFS) ReadDir(p string) ([]fs.DirEntry, error) { return h.fs.ReadDir(p) }
func (h remoteHostFS) Mkdir(p string, perm fs.FileMode) error  { return h.fs.Mkdir(p, perm) }
func (h remoteHostFS) Symlink(target, p string) error          { return h.fs.Symlink(p, target) }

func (h remoteHostFS) OpenFile(p string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	f, err := h.fs.OpenFile(p, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Remove is refused: the remote's filesystem offers no removal yet.
func (h remoteHostFS) Remove(p string) error {
	return &fs.PathError{Op: "remove", Path: p, Err: syscall.EPERM}
}
