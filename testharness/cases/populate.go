package cases

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/pikaci/vmexec/shared/devices"
)

// FS is the filesystem Populate lays a case out in: the virtual remote
// host's (a *remotefs.FS), or any other that creates paths the same way.
type FS interface {
	// Symlink makes linkPath a symbolic link to target (the order of
	// symlink(2) and vfs.FS), creating its missing parents.
	Symlink(target, linkPath string) error
	// MkdirAll makes a directory and any missing parents.
	MkdirAll(p string) error
	// WriteFile writes a file, making its missing parent directories.
	WriteFile(p string, data []byte) error
}

// ResolveFS is the filesystem FSRemote answers device-planning queries
// from: a *remotefs.FS, or any other that reads files and resolves paths
// as readlink -f does.
type ResolveFS interface {
	ReadFile(p string) ([]byte, error)
	// Resolve resolves p as readlink -f does: every symlink followed, the
	// last component allowed to be missing.
	Resolve(p string) (string, error)
	Exists(p string) bool
}

// Populate lays the case's remote host out in fsys: its symlinks, then its
// directories, then its files (so a file may live under a symlinked dir).
func (c *Case) Populate(fsys FS) error {
	if err := populate(fsys, c.RemoteSymlinks, c.RemoteDirs, c.RemoteFiles); err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	return nil
}

// Populate lays the whole-job case's remote host out in fsys, as
// Case.Populate does.
func (c *WholeCase) Populate(fsys FS) error {
	if err := populate(fsys, c.RemoteSymlinks, c.RemoteDirs, c.RemoteFiles); err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	return nil
}

func populate(fsys FS, symlinks map[string]string, dirs []string, files map[string][]byte) error {
	for _, l := range slices.Sorted(maps.Keys(symlinks)) {
		if err := fsys.Symlink(symlinks[l], l); err != nil {
			return fmt.Errorf("remote symlink %s: %w", l, err)
		}
	}
	for _, d := range dirs {
		if err := fsys.MkdirAll(d); err != nil {
			return fmt.Errorf("remote dir %s: %w", d, err)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(files)) {
		if err := fsys.WriteFile(f, files[f]); err != nil {
			return fmt.Errorf("remote file %s: %w", f, err)
		}
	}
	return nil
}

// FSRemote answers device-planning queries straight from a remote
// filesystem, with readlink -f semantics: the pure counterpart of the
// shell commands a plugin runs over SSH.
type FSRemote struct{ FS ResolveFS }

// Fetch implements devices.Remote.
func (r FSRemote) Fetch(ctx context.Context, q devices.Query) (devices.Answer, error) {
	if err := ctx.Err(); err != nil {
		return devices.Answer{}, err
	}
	a := devices.Answer{Files: make([]devices.File, len(q.Read)), Resolved: make([]devices.Resolved, len(q.Resolve))}
	for i, p := range q.Read {
		data, err := r.FS.ReadFile(p)
		a.Files[i] = devices.File{Data: data, Err: err}
	}
	for i, p := range q.Resolve {
		res, err := r.FS.Resolve(p)
		if err != nil {
			a.Resolved[i] = devices.Resolved{Err: err}
			continue
		}
		a.Resolved[i] = devices.Resolved{Path: res, Exists: r.FS.Exists(res)}
	}
	return a, nil
}
