package cases

import (
	"context"
	"fmt"
	"sort"

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
	links := make([]string, 0, len(c.RemoteSymlinks))
	for l := range c.RemoteSymlinks {
		links = append(links, l)
	}
	sort.Strings(links)
	for _, l := range links {
		if err := fsys.Symlink(c.RemoteSymlinks[l], l); err != nil {
			return fmt.Errorf("case %s: remote symlink %s: %w", c.Name, l, err)
		}
	}
	for _, d := range c.RemoteDirs {
		if err := fsys.MkdirAll(d); err != nil {
			return fmt.Errorf("case %s: remote dir %s: %w", c.Name, d, err)
		}
	}
	files := make([]string, 0, len(c.RemoteFiles))
	for f := range c.RemoteFiles {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		if err := fsys.WriteFile(f, c.RemoteFiles[f]); err != nil {
			return fmt.Errorf("case %s: remote file %s: %w", c.Name, f, err)
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
