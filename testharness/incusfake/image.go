package incusfake

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// TreeEntry is one file of an image's tree: what every instance made from
// the image finds in its own filesystem when it is created.
type TreeEntry struct {
	Path     string      // absolute guest path
	Kind     string      // "file", "dir", "symlink"
	Mode     fs.FileMode // permission bits (set-id and sticky bits too)
	UID, GID int
	Data     []byte // a file's content
	Target   string // a symlink's target
}

// SetImageTree gives the image with alias in project a tree; instances
// created from it afterwards start with it (parents are made as root
// 0755 directories). It reports whether there is such an image.
func (s *Server) SetImageTree(project, alias string, tree []TreeEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, ok := s.gs().images[project][alias]
	if !ok {
		return false
	}
	img.Tree = slices.Clone(tree)
	s.gs().images[project][alias] = img
	return true
}

// BusyboxLikeTree is the tree of the busybox image internal/lxdtest builds
// for real LXD: a root user and a user "ci" of uid and gid 1000 whose home
// is /home/ci, in /etc/passwd and /etc/group, and /bin/sh. The programs
// themselves are vshell's.
func BusyboxLikeTree() []TreeEntry {
	return []TreeEntry{
		{Path: "/bin/sh", Kind: "file", Mode: 0o755, Data: []byte("#!/bin/busybox\n")},
		{Path: "/etc/passwd", Kind: "file", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nci:x:1000:1000:ci:/home/ci:/bin/sh\n")},
		{Path: "/etc/group", Kind: "file", Mode: 0o644, Data: []byte("root:x:0:\nci:x:1000:\n")},
		{Path: "/home/ci", Kind: "dir", Mode: 0o755, UID: 1000, GID: 1000},
	}
}

// layTree writes tree into a new guest's own filesystem.
func layTree(m *memFS, tree []TreeEntry) error {
	for _, e := range tree {
		p := path.Clean("/" + e.Path)
		cur := ""
		for _, c := range strings.Split(path.Dir(p), "/")[1:] {
			if c == "" {
				continue
			}
			cur += "/" + c
			if err := m.Mkdir(cur, 0o755); err != nil && !os.IsExist(err) {
				return err
			}
		}
		var err error
		switch e.Kind {
		case "dir":
			if err = m.Mkdir(p, e.Mode.Perm()); os.IsExist(err) {
				err = nil
			}
		case "symlink":
			err = m.Symlink(e.Target, p)
		case "file":
			var f interface {
				Write([]byte) (int, error)
				Close() error
			}
			if f, err = m.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, e.Mode.Perm()); err == nil {
				_, err = f.Write(e.Data)
				f.Close()
			}
		default:
			err = fmt.Errorf("incusfake: image tree entry %s: unknown kind %q", p, e.Kind)
		}
		if err == nil && e.Kind != "symlink" {
			err = m.Chmod(p, e.Mode)
		}
		if err == nil {
			err = m.Lchown(p, e.UID, e.GID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
