package incusfake

import (
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/vfs"
)

// HostFS is the filesystem of the machine the fake Incus runs on, where disk
// devices find their source directories: the one filesystem interface of
// the harness. The guest hands it paths that are absolute, clean and free
// of symlinks except maybe the last component, which it never asks to
// follow (the guest resolves every link itself, inside the guest). Errors
// should wrap a syscall.Errno (fs.PathError does).
//
// The harness's virtual remote host gives its private filesystem (a
// *remotefs.FS) here; without one (SetHostFS not called) the fake uses
// this machine's.
type HostFS = vfs.FS

// attrSetter is implemented by filesystems that can change a file's mode
// and owner (chmod, chown). Neither follows a symlink in the last
// component: the guest resolves links itself.
type attrSetter interface {
	Chmod(path string, mode fs.FileMode) error
	Lchown(path string, uid, gid int) error
}

// Owner returns a file's owner as its FileInfo reports it (a
// *syscall.Stat_t, as this machine's filesystem and the guest's own tree
// give), 0 and 0 without one.
func Owner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return 0, 0
}

// osHostFS is this machine's filesystem.
type osHostFS struct{}

func (osHostFS) Lstat(p string) (fs.FileInfo, error)     { return os.Lstat(p) }
func (osHostFS) Stat(p string) (fs.FileInfo, error)      { return os.Stat(p) }
func (osHostFS) Readlink(p string) (string, error)       { return os.Readlink(p) }
func (osHostFS) ReadDir(p string) ([]fs.DirEntry, error) { return os.ReadDir(p) }
func (osHostFS) Mkdir(p string, perm fs.FileMode) error  { return os.Mkdir(p, perm) }
func (osHostFS) Symlink(target, p string) error          { return os.Symlink(target, p) }
func (osHostFS) Remove(p string) error                   { return os.Remove(p) }
func (osHostFS) Mkfifo(p string, perm fs.FileMode) error { return mkfifo(p, perm) }
func (osHostFS) Lchown(p string, uid, gid int) error     { return os.Lchown(p, uid, gid) }

// Chmod refuses a symlink rather than change what it points to (Linux
// has no lchmod).
func (osHostFS) Chmod(p string, mode fs.FileMode) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return perr("chmod", p, syscall.ELOOP)
	}
	return os.Chmod(p, mode)
}
func (osHostFS) OpenFile(p string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	return os.OpenFile(p, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
}

func mkfifo(p string, perm fs.FileMode) error {
	if err := syscall.Mkfifo(p, uint32(perm.Perm())); err != nil {
		return &fs.PathError{Op: "mkfifo", Path: p, Err: err}
	}
	return nil
}

// memFS is a guest's own tree, in memory, keyed by canonical path. Its
// files hold at most MaxGuestBytes together; a write beyond fails with
// ENOSPC, as a full disk does.
type memFS struct {
	mu    sync.Mutex
	nodes map[string]*memNode
	used  int64
}

// MaxGuestBytes bounds the content of a guest's own files.
const MaxGuestBytes = 256 << 20

type memNode struct {
	mode     fs.FileMode // type bits, permissions, set-id and sticky bits
	uid, gid int
	data     []byte
	target   string
	mtime    time.Time
}

func newMemFS(hostname string) *memFS {
	m := &memFS{nodes: map[string]*memNode{}}
	now := time.Now()
	for _, d := range []string{"/", "/bin", "/dev", "/etc", "/home", "/root", "/run", "/sbin", "/tmp", "/usr", "/usr/bin", "/var", "/var/tmp"} {
		m.nodes[d] = &memNode{mode: fs.ModeDir | 0o755, mtime: now}
	}
	m.nodes["/tmp"].mode = fs.ModeDir | fs.ModeSticky | 0o777
	m.nodes["/root"].mode = fs.ModeDir | 0o700
	m.nodes["/etc/hostname"] = &memNode{mode: 0o644, data: []byte(hostname + "\n"), mtime: now}
	m.nodes["/dev/null"] = &memNode{mode: fs.ModeDevice | fs.ModeCharDevice | 0o666, mtime: now}
	return m
}

type memInfo struct {
	name string
	n    memNode
	size int64
}

func (i *memInfo) Name() string       { return i.name }
func (i *memInfo) Size() int64        { return i.size }
func (i *memInfo) Mode() fs.FileMode  { return i.n.mode }
func (i *memInfo) ModTime() time.Time { return i.n.mtime }
func (i *memInfo) IsDir() bool        { return i.n.mode.IsDir() }
func (i *memInfo) Sys() any {
	return &syscall.Stat_t{Uid: uint32(i.n.uid), Gid: uint32(i.n.gid), Size: i.size}
}

func (m *memFS) info(p string, n *memNode) *memInfo {
	size := int64(len(n.data))
	if n.mode&fs.ModeSymlink != 0 {
		size = int64(len(n.target))
	}
	return &memInfo{name: path.Base(p), n: *n, size: size}
}

func perr(op, p string, errno syscall.Errno) error { return &fs.PathError{Op: op, Path: p, Err: errno} }

func (m *memFS) Lstat(p string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	if n == nil {
		return nil, perr("lstat", p, syscall.ENOENT)
	}
	return m.info(p, n), nil
}

// Stat follows p's links inside the tree.
func (m *memFS) Stat(p string) (fs.FileInfo, error) {
	_, fi, err := vfs.Canonicalize(m, "stat", p, vfs.Existing)
	if err == nil && fi == nil {
		err = perr("stat", p, syscall.ENOENT)
	}
	return fi, err
}

func (m *memFS) Readlink(p string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	switch {
	case n == nil:
		return "", perr("readlink", p, syscall.ENOENT)
	case n.mode&fs.ModeSymlink == 0:
		return "", perr("readlink", p, syscall.EINVAL)
	}
	return n.target, nil
}

// ReadDir lists p in no particular order (map order), as a directory
// listing of a real filesystem is unsorted.
func (m *memFS) ReadDir(p string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	switch {
	case n == nil:
		return nil, perr("readdir", p, syscall.ENOENT)
	case !n.mode.IsDir():
		return nil, perr("readdir", p, syscall.ENOTDIR)
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	var out []fs.DirEntry
	for k, c := range m.nodes {
		if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" && !strings.Contains(rest, "/") {
			out = append(out, fs.FileInfoToDirEntry(m.info(k, c)))
		}
	}
	return out, nil
}

func (m *memFS) parentOK(op, p string) error {
	parent := m.nodes[path.Dir(p)]
	switch {
	case parent == nil:
		return perr(op, p, syscall.ENOENT)
	case !parent.mode.IsDir():
		return perr(op, p, syscall.ENOTDIR)
	}
	return nil
}

func (m *memFS) create(op, p string, n *memNode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nodes[p] != nil {
		return perr(op, p, syscall.EEXIST)
	}
	if err := m.parentOK(op, p); err != nil {
		return err
	}
	n.mtime = time.Now()
	m.nodes[p] = n
	return nil
}

func (m *memFS) Mkdir(p string, perm fs.FileMode) error {
	return m.create("mkdir", p, &memNode{mode: fs.ModeDir | perm.Perm()})
}

func (m *memFS) Symlink(target, p string) error {
	return m.create("symlink", p, &memNode{mode: fs.ModeSymlink | 0o777, target: target})
}

func (m *memFS) Mkfifo(p string, perm fs.FileMode) error {
	return m.create("mkfifo", p, &memNode{mode: fs.ModeNamedPipe | perm.Perm()})
}

// Chmod sets p's permission, set-id and sticky bits.
func (m *memFS) Chmod(p string, mode fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	switch {
	case n == nil:
		return perr("chmod", p, syscall.ENOENT)
	case n.mode&fs.ModeSymlink != 0:
		return perr("chmod", p, syscall.ELOOP)
	}
	n.mode = n.mode&^vfs.Bits | mode&vfs.Bits
	return nil
}

// Lchown sets p's owner; -1 keeps one, as chown(2) does.
func (m *memFS) Lchown(p string, uid, gid int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	if n == nil {
		return perr("lchown", p, syscall.ENOENT)
	}
	if uid >= 0 {
		n.uid = uid
	}
	if gid >= 0 {
		n.gid = gid
	}
	return nil
}

func (m *memFS) Remove(p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[p]
	if n == nil {
		return perr("remove", p, syscall.ENOENT)
	}
	if n.mode.IsDir() {
		prefix := strings.TrimSuffix(p, "/") + "/"
		for k := range m.nodes {
			if strings.HasPrefix(k, prefix) {
				return perr("remove", p, syscall.ENOTEMPTY)
			}
		}
		if p == "/" {
			return perr("remove", p, syscall.EBUSY)
		}
	}
	m.used -= int64(len(n.data))
	delete(m.nodes, p)
	return nil
}

func (m *memFS) OpenFile(p string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	write := flag&(os.O_WRONLY|os.O_RDWR) != 0
	n := m.nodes[p]
	if n == nil {
		if flag&os.O_CREATE == 0 {
			return nil, perr("open", p, syscall.ENOENT)
		}
		if err := m.parentOK("open", p); err != nil {
			return nil, err
		}
		n = &memNode{mode: perm.Perm(), mtime: time.Now()}
		m.nodes[p] = n
	} else if flag&os.O_EXCL != 0 && flag&os.O_CREATE != 0 {
		return nil, perr("open", p, syscall.EEXIST)
	}
	switch {
	case n.mode.IsDir() && write:
		return nil, perr("open", p, syscall.EISDIR)
	case n.mode&fs.ModeSymlink != 0:
		return nil, perr("open", p, syscall.ELOOP)
	}
	if write && flag&os.O_TRUNC != 0 && n.mode.IsRegular() {
		m.used -= int64(len(n.data))
		n.data = nil
		n.mtime = time.Now()
	}
	return &memFile{m: m, n: n, append: flag&os.O_APPEND != 0, write: write}, nil
}

// memFile is an open memFS file. Reading a FIFO or a device gives EOF;
// writing a device discards.
type memFile struct {
	m      *memFS
	n      *memNode
	off    int
	append bool
	write  bool
}

func (f *memFile) Read(b []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if !f.n.mode.IsRegular() || f.off >= len(f.n.data) {
		return 0, io.EOF
	}
	n := copy(b, f.n.data[f.off:])
	f.off += n
	return n, nil
}

func (f *memFile) Write(b []byte) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if !f.write {
		return 0, syscall.EBADF
	}
	if !f.n.mode.IsRegular() {
		return len(b), nil
	}
	if f.append {
		f.off = len(f.n.data)
	}
	if grow := f.off + len(b) - len(f.n.data); grow > 0 {
		if f.m.used+int64(grow) > MaxGuestBytes {
			return 0, syscall.ENOSPC
		}
		f.m.used += int64(grow)
		f.n.data = append(f.n.data, make([]byte, grow)...)
	}
	copy(f.n.data[f.off:], b)
	f.off += len(b)
	f.n.mtime = time.Now()
	return len(b), nil
}

func (f *memFile) Close() error { return nil }

// GuestFS is an instance's filesystem: its own tree, with each disk device
// of the running instance mounted at its path, backed by the host's
// directory at its source (read-only where the device says readonly).
// Every symlink is resolved inside the guest, as the kernel does in a
// container. It is a vfs.FS.
type GuestFS struct {
	root *memFS
	mu   sync.Mutex
	host HostFS
	mnts []mount // longest path first
}

type mount struct {
	path, source string
	ro           bool
}

func newGuestFS(hostname string) *GuestFS {
	return &GuestFS{root: newMemFS(hostname)}
}

// setMounts mounts the disk devices (none when devices is nil), creating
// missing mount points in the guest's own tree.
func (g *GuestFS) setMounts(host HostFS, devices shared.Devices) {
	var mnts []mount
	for _, name := range slices.Sorted(maps.Keys(devices)) {
		d := devices[name]
		if d["type"] != "disk" || d["source"] == "" || d["path"] == "" || d["path"] == "/" || d["pool"] != "" {
			continue
		}
		p := path.Clean("/" + d["path"])
		mnts = append(mnts, mount{path: p, source: path.Clean(d["source"]), ro: isTrue(d["readonly"])})
	}
	slices.SortFunc(mnts, func(a, b mount) int { return len(b.path) - len(a.path) })
	for i := len(mnts) - 1; i >= 0; i-- { // shortest first
		cur := ""
		for _, c := range strings.Split(mnts[i].path, "/")[1:] {
			cur += "/" + c
			_ = g.root.Mkdir(cur, 0o755) // existing is fine
		}
	}
	g.mu.Lock()
	g.host, g.mnts = host, mnts
	g.mu.Unlock()
}

// backend returns where the canonical guest path p lives.
func (g *GuestFS) backend(p string) (HostFS, string, bool, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.mnts {
		if p == m.path {
			return g.host, m.source, m.ro, true
		}
		if rest, ok := strings.CutPrefix(p, m.path+"/"); ok {
			return g.host, path.Join(m.source, rest), m.ro, false
		}
	}
	return g.root, p, false, false
}

// resolve follows p inside the guest with the one resolver of vfs. It
// returns the canonical path and its info (nil when only the last
// component is missing). The last component is followed when follow is
// set or p ends in a slash.
func (g *GuestFS) resolve(op, p string, follow bool) (string, fs.FileInfo, error) {
	if follow {
		return vfs.Canonicalize(guestTree{g}, op, p, vfs.AllButLast)
	}
	return vfs.Entry(guestTree{g}, op, p)
}

// guestTree is the guest's entries by canonical path, each looked up where
// it lives (the guest's own tree or a disk device's source on the host),
// never following a link.
type guestTree struct{ g *GuestFS }

func (t guestTree) Lstat(p string) (fs.FileInfo, error) {
	be, bp, _, _ := t.g.backend(p)
	fi, err := be.Lstat(bp)
	if err != nil {
		return nil, vfs.PathError("lstat", p, err)
	}
	name := path.Base(p)
	if p == "/" {
		name = "/"
	}
	return vfs.Named(fi, name), nil
}

func (t guestTree) Readlink(p string) (string, error) {
	be, bp, _, _ := t.g.backend(p)
	target, err := be.Readlink(bp)
	if err != nil {
		return "", vfs.PathError("readlink", p, err)
	}
	return target, nil
}

func (g *GuestFS) Lstat(p string) (fs.FileInfo, error) {
	_, fi, err := g.resolve("lstat", p, false)
	if err == nil && fi == nil {
		err = perr("lstat", p, syscall.ENOENT)
	}
	return fi, err
}

func (g *GuestFS) Stat(p string) (fs.FileInfo, error) {
	_, fi, err := g.resolve("stat", p, true)
	if err == nil && fi == nil {
		err = perr("stat", p, syscall.ENOENT)
	}
	return fi, err
}

func (g *GuestFS) Readlink(p string) (string, error) {
	canon, fi, err := g.resolve("readlink", p, false)
	switch {
	case err != nil:
		return "", err
	case fi == nil:
		return "", perr("readlink", p, syscall.ENOENT)
	case fi.Mode()&fs.ModeSymlink == 0:
		return "", perr("readlink", p, syscall.EINVAL)
	}
	be, bp, _, _ := g.backend(canon)
	t, err := be.Readlink(bp)
	if err != nil {
		return "", vfs.PathError("readlink", p, err)
	}
	return t, nil
}

func (g *GuestFS) ReadDir(p string) ([]fs.DirEntry, error) {
	canon, fi, err := g.resolve("open", p, true)
	switch {
	case err != nil:
		return nil, err
	case fi == nil:
		return nil, perr("open", p, syscall.ENOENT)
	case !fi.IsDir():
		return nil, perr("open", p, syscall.ENOTDIR)
	}
	be, bp, _, _ := g.backend(canon)
	ents, err := be.ReadDir(bp)
	if err != nil {
		return nil, vfs.PathError("open", p, err)
	}
	return ents, nil
}

func (g *GuestFS) OpenFile(p string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	canon, fi, err := g.resolve("open", p, true)
	if err != nil {
		return nil, err
	}
	write := flag&(os.O_WRONLY|os.O_RDWR|os.O_TRUNC) != 0
	if fi == nil && flag&os.O_CREATE == 0 {
		return nil, perr("open", p, syscall.ENOENT)
	}
	be, bp, ro, _ := g.backend(canon)
	if ro && (write || fi == nil) {
		return nil, perr("open", p, syscall.EROFS)
	}
	f, err := be.OpenFile(bp, flag, perm)
	if err != nil {
		return nil, vfs.PathError("open", p, err)
	}
	return f, nil
}

// writable resolves p for creating or removing its last component.
func (g *GuestFS) writable(op, p string) (HostFS, string, fs.FileInfo, bool, error) {
	canon, fi, err := g.resolve(op, p, false)
	if err != nil {
		return nil, "", nil, false, err
	}
	be, bp, ro, isMount := g.backend(canon)
	if ro {
		return nil, "", nil, false, perr(op, p, syscall.EROFS)
	}
	return be, bp, fi, isMount, nil
}

func (g *GuestFS) Mkdir(p string, perm fs.FileMode) error {
	be, bp, fi, _, err := g.writable("mkdir", p)
	if err != nil {
		return err
	}
	if fi != nil {
		return perr("mkdir", p, syscall.EEXIST)
	}
	if err := be.Mkdir(bp, perm); err != nil {
		return vfs.PathError("mkdir", p, err)
	}
	return nil
}

func (g *GuestFS) Symlink(target, p string) error {
	be, bp, fi, _, err := g.writable("symlink", p)
	if err != nil {
		return err
	}
	if fi != nil {
		return perr("symlink", p, syscall.EEXIST)
	}
	if err := be.Symlink(target, bp); err != nil {
		return vfs.PathError("symlink", p, err)
	}
	return nil
}

func (g *GuestFS) Remove(p string) error {
	be, bp, fi, isMount, err := g.writable("remove", p)
	switch {
	case err != nil:
		return err
	case fi == nil:
		return perr("remove", p, syscall.ENOENT)
	case isMount:
		return perr("remove", p, syscall.EBUSY)
	}
	if err := be.Remove(bp); err != nil {
		return vfs.PathError("remove", p, err)
	}
	return nil
}

// Mkfifo makes a named pipe, in the guest's own tree or on a host
// filesystem that can make one.
func (g *GuestFS) Mkfifo(p string, perm fs.FileMode) error {
	be, bp, fi, _, err := g.writable("mkfifo", p)
	if err != nil {
		return err
	}
	if fi != nil {
		return perr("mkfifo", p, syscall.EEXIST)
	}
	mk, ok := be.(vfs.FIFOer)
	if !ok {
		return perr("mkfifo", p, syscall.EPERM)
	}
	if err := mk.Mkfifo(bp, perm); err != nil {
		return vfs.PathError("mkfifo", p, err)
	}
	return nil
}

// Chmod sets the mode of p, following a symlink inside the guest as
// chmod(2) does. A read-only disk refuses with EROFS.
func (g *GuestFS) Chmod(p string, mode fs.FileMode) error {
	return g.setAttr("chmod", p, func(a attrSetter, bp string) error { return a.Chmod(bp, mode) })
}

// Chown sets the owner of p (-1 keeps one), following a symlink inside
// the guest as chown(2) does.
func (g *GuestFS) Chown(p string, uid, gid int) error {
	return g.setAttr("chown", p, func(a attrSetter, bp string) error { return a.Lchown(bp, uid, gid) })
}

func (g *GuestFS) setAttr(op, p string, set func(a attrSetter, bp string) error) error {
	canon, fi, err := g.resolve(op, p, true)
	switch {
	case err != nil:
		return err
	case fi == nil:
		return perr(op, p, syscall.ENOENT)
	}
	be, bp, ro, _ := g.backend(canon)
	if ro {
		return perr(op, p, syscall.EROFS)
	}
	a, ok := be.(attrSetter)
	if !ok {
		return perr(op, p, syscall.EPERM)
	}
	if err := set(a, bp); err != nil {
		return vfs.PathError(op, p, err)
	}
	return nil
}

// WriteFile writes a file in the guest (creating or truncating it), for
// tests and harnesses that lay out a guest.
func (g *GuestFS) WriteFile(p string, data []byte, perm fs.FileMode) error {
	f, err := g.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadFile reads a file in the guest, following symlinks inside it.
func (g *GuestFS) ReadFile(p string) ([]byte, error) {
	f, err := g.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// MkdirAll makes p and its missing parents.
func (g *GuestFS) MkdirAll(p string) error {
	cur := ""
	for _, c := range strings.Split(p, "/") {
		if c == "" {
			continue
		}
		cur += "/" + c
		if fi, err := g.Stat(cur); err == nil && fi.IsDir() {
			continue
		}
		if err := g.Mkdir(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ownerFS is the guest as a process of uid and gid sees it: what it
// creates in the guest's own tree is owned by it, as the kernel does. (A
// file it creates on a disk device keeps the host's owner; permissions
// are not checked.)
type ownerFS struct {
	*GuestFS
	uid, gid int
}

// As returns the guest's filesystem for a process of uid and gid.
func (g *GuestFS) As(uid, gid int) vfs.FS {
	if uid == 0 && gid == 0 {
		return g
	}
	return ownerFS{g, uid, gid}
}

// A guest process may make FIFOs and change modes and owners, whoever it
// runs as.
var (
	_ vfs.FIFOer = ownerFS{}
	_ vfs.Attrer = ownerFS{}
	_ vfs.FIFOer = (*GuestFS)(nil)
	_ vfs.Attrer = (*GuestFS)(nil)
)

// own gives the entry p was just created as to the process's owner when
// it lives in the guest's own tree.
func (o ownerFS) own(p string, follow bool) {
	canon, fi, err := o.resolve("lchown", p, follow)
	if err != nil || fi == nil {
		return
	}
	if be, bp, _, _ := o.backend(canon); be == HostFS(o.root) {
		_ = o.root.Lchown(bp, o.uid, o.gid)
	}
}

func (o ownerFS) OpenFile(p string, flag int, perm fs.FileMode) (io.ReadWriteCloser, error) {
	created := false
	if flag&os.O_CREATE != 0 {
		_, fi, err := o.resolve("open", p, true)
		created = err == nil && fi == nil
	}
	f, err := o.GuestFS.OpenFile(p, flag, perm)
	if err == nil && created {
		o.own(p, true)
	}
	return f, err
}

func (o ownerFS) Mkdir(p string, perm fs.FileMode) error {
	err := o.GuestFS.Mkdir(p, perm)
	if err == nil {
		o.own(p, false)
	}
	return err
}

func (o ownerFS) Symlink(target, p string) error {
	err := o.GuestFS.Symlink(target, p)
	if err == nil {
		o.own(p, false)
	}
	return err
}

func (o ownerFS) Mkfifo(p string, perm fs.FileMode) error {
	err := o.GuestFS.Mkfifo(p, perm)
	if err == nil {
		o.own(p, false)
	}
	return err
}
