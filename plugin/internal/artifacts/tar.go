package artifacts

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// Limits bound one collection, whichever way it reads the guest.
type Limits struct {
	// MaxBytes caps the file content written (artifacts.max_bytes).
	MaxBytes int64
	// MaxFiles caps the entries met, collected or skipped: files, links,
	// directories, special files (artifacts.max_files); 0: no cap.
	MaxFiles int64
}

// MaxHeader bounds one tar header with its extended records (PAX, GNU
// long names): a stream whose header takes more is refused.
const MaxHeader = 256 << 10

// ErrRefused is wrapped by the error of a collection that stopped because
// the guest's archive broke a rule no honest tar breaks (a name leaving the
// directory, an entry through a link, a duplicate, a huge header).
var ErrRefused = errors.New("the guest's archive is refused")

// WithTimeout bounds a collection by artifacts.timeout_secs: once it
// passes, ctx's cause is an error naming the limit, which Collect and
// CollectTar return.
func WithTimeout(ctx context.Context, secs int64) (context.Context, context.CancelFunc) {
	v := fmt.Sprint(secs)
	cause := shared.Errorf(shared.ErrUnavailable, "artifacts.timeout_secs", v,
		"collect artifacts: not done within artifacts.timeout_secs %s: %w", v, context.DeadlineExceeded)
	return context.WithTimeoutCause(ctx, time.Duration(secs)*time.Second, cause)
}

// ctxErr is why ctx ended: the limit's error under WithTimeout.
func ctxErr(ctx context.Context) error {
	return fmt.Errorf("collect artifacts: %w", context.Cause(ctx))
}

// CollectTar reads a tar archive of the guest directory guestDir, names
// relative to it (as `tar -cf - .` run in it writes them), into destDir
// (created when missing), with the rules of Collect, reading the archive
// as the hostile input it is:
//
//   - a name that is absolute, holds a ".." or empty component or a NUL,
//     a duplicate name, an entry below a link or a file, a header (with
//     its extended records) over MaxHeader, a non-file entry with content,
//     or a hard link to anything but a file of this archive is refused:
//     the collection stops with an error wrapping ErrRefused naming the
//     entry, keeping what it wrote;
//   - symlinks are kept, written relative, only when their target (taken
//     relative to the link's directory unless absolute) is inside
//     guestDir; FIFOs, sockets and devices are skipped and named in the
//     warnings; set-uid, set-gid and sticky bits are dropped;
//   - a name over MaxName bytes or MaxDepth levels is refused before any
//     directory of it is made, and so is an archive that stops without its
//     end-of-archive blocks (cut short);
//   - the byte cap counts what is written (a hard link counts its file's
//     size, as two reads of it would), the entry cap every entry but the
//     top directory, and every directory a name implies that the archive
//     did not hold;
//   - warnings are cut at MaxWarning bytes, and at most MaxWarnings kept;
//   - when ctx ends, the stream is closed and the error is ctx's cause
//     (see WithTimeout).
//
// CollectTar returns at the archive's end, without reading what follows.
func CollectTar(ctx context.Context, stream io.ReadCloser, guestDir, destDir string, lim Limits) (shared.CollectResult, error) {
	res := shared.CollectResult{Dir: destDir}
	if !path.IsAbs(guestDir) || path.Clean(guestDir) != guestDir {
		return res, shared.Errorf(shared.ErrInvalidInput, "artifacts.path", guestDir,
			"artifacts.path %s: must be absolute and clean", shared.Show(guestDir))
	}
	stop := context.AfterFunc(ctx, func() { stream.Close() })
	defer stop()
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return res, fmt.Errorf("collect artifacts: %w", err)
	}
	root, err := openDest(destDir)
	if err != nil {
		return res, err
	}
	defer root.Close()
	br := &budgetReader{r: stream}
	t := &tarCollector{
		collector: collector{guestDir: guestDir, lim: lim, root: root, res: &res},
		tr:        tar.NewReader(br),
		br:        br,
		seen:      map[string]byte{},
	}
	err = t.run(ctx)
	if err != nil && ctx.Err() != nil {
		err = ctxErr(ctx)
	}
	return res, err
}

// budgetReader fails once more than left bytes are read from it. It keeps
// the last block it read, and whether the stream said EOF.
type budgetReader struct {
	r    io.Reader
	left int64
	over bool
	eof  bool
	tail [512]byte
}

var errBudget = errors.New("read budget exhausted")

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.over = true
		return 0, errBudget
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if n >= len(b.tail) {
		copy(b.tail[:], p[n-len(b.tail):n])
	} else {
		copy(b.tail[:], b.tail[n:])
		copy(b.tail[len(b.tail)-n:], p[:n])
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// cut reports whether the archive's end came from the stream's end, not
// from its end-of-archive blocks: the last block read was not zeros. (A
// last file whose content ends in a zero block looks whole: a guest that
// wants to cut its archive short can leave entries out just as well.)
func (b *budgetReader) cut() bool {
	return b.eof && b.tail != [512]byte{}
}

// ctxReader fails once ctx ended: a sparse entry's holes are read without
// touching the stream, whose close would not stop them.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type tarCollector struct {
	collector
	tr      *tar.Reader
	br      *budgetReader
	seen    map[string]byte // what this archive wrote: 'd'irectory, 'f'ile, 'l'ink, 's'kipped
	entries int64
}

func (t *tarCollector) refuse(name, format string, args ...any) error {
	return shared.Errorf(shared.ErrPermission, "artifacts entry", name,
		"collect artifacts: entry %s of the guest's archive of %s: %s: %w",
		shared.Show(name), shared.Show(t.guestDir), fmt.Sprintf(format, args...), ErrRefused)
}

func (t *tarCollector) run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		// The previous entry's padding, then this header and its records.
		t.br.left, t.br.over = MaxHeader+2*512, false
		hdr, err := t.tr.Next()
		if err == io.EOF {
			if t.br.cut() {
				// An archive ends with zero blocks; a stream that stops
				// right after an entry was cut short.
				return fmt.Errorf("collect artifacts: the guest's archive of %s ends without its end-of-archive blocks: it was cut short", shared.Show(t.guestDir))
			}
			return nil
		}
		if err != nil {
			if t.br.over {
				return t.refuse("(next header)", "a header of more than %d bytes", MaxHeader)
			}
			return fmt.Errorf("collect artifacts: read the guest's archive of %s: %w", shared.Show(t.guestDir), err)
		}
		if err := t.entry(ctx, hdr); err != nil {
			return err
		}
	}
}

// MaxName bounds an entry's name (Linux's PATH_MAX), MaxDepth its
// components: each level is one more directory to make and to walk.
const (
	MaxName  = 4096
	MaxDepth = 256
)

// depth is the number of components of an entry's name, "./" and a
// trailing "/" not counted.
func depth(name string) int {
	n := strings.TrimPrefix(strings.TrimSuffix(name, "/"), "./")
	return strings.Count(n, "/") + 1
}

// maxShown bounds a name in an error.
const maxShown = 256

// tooLong reports whether name is over MaxName or MaxDepth.
func tooLong(name string) bool {
	return len(name) > MaxName || depth(name) > MaxDepth
}

// entryName is hdr's name relative to guestDir, "" for guestDir itself.
func entryName(name string) (string, bool) {
	if strings.ContainsRune(name, 0) || strings.HasPrefix(name, "/") || tooLong(name) {
		return "", false
	}
	n := strings.TrimSuffix(name, "/")
	if n == "." {
		return "", true
	}
	n = strings.TrimPrefix(n, "./")
	for c := range strings.SplitSeq(n, "/") {
		if c == "" || c == "." || c == ".." {
			return "", false
		}
	}
	return n, true
}

func (t *tarCollector) entry(ctx context.Context, hdr *tar.Header) error {
	rel, ok := entryName(hdr.Name)
	if !ok && tooLong(hdr.Name) {
		return t.refuse(shared.Shorten(hdr.Name, maxShown), "a name of %d bytes and %d levels, over %d bytes or %d levels",
			len(hdr.Name), depth(hdr.Name), MaxName, MaxDepth)
	}
	if !ok {
		return t.refuse(hdr.Name, "not a name inside the directory")
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return t.refuse(hdr.Name, "the top entry is not a directory")
		}
		if _, dup := t.seen["."]; dup {
			return t.refuse(hdr.Name, "a duplicate name")
		}
		t.seen["."] = 'd'
		return nil
	}
	t.entries++
	if t.lim.MaxFiles > 0 && t.entries > t.lim.MaxFiles {
		return t.filesLimit(path.Join(t.guestDir, rel))
	}
	if _, dup := t.seen[rel]; dup {
		return t.refuse(hdr.Name, "a duplicate name")
	}
	isFile := hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse
	if !isFile && hdr.Size != 0 {
		return t.refuse(hdr.Name, "a %s with %d bytes of content", typeName(hdr.Typeflag), hdr.Size)
	}
	if err := t.parents(ctx, hdr.Name, rel); err != nil {
		return err
	}
	guestPath := path.Join(t.guestDir, rel)
	switch {
	case hdr.Typeflag == tar.TypeDir:
		t.seen[rel] = 'd'
		return t.mkdir(rel)
	case isFile:
		t.seen[rel] = 'f'
		t.br.left = hdr.Size + 512
		return t.file(ctx, rel, guestPath, Entry{Mode: fs.FileMode(hdr.Mode).Perm(), Size: hdr.Size, Body: io.NopCloser(ctxReader{ctx, t.tr})})
	case hdr.Typeflag == tar.TypeSymlink:
		t.seen[rel] = 'l'
		target := hdr.Linkname
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(guestPath), target)
		}
		t.link(rel, guestPath, path.Clean(target))
		return nil
	case hdr.Typeflag == tar.TypeLink:
		return t.hardLink(hdr, rel, guestPath)
	default:
		t.seen[rel] = 's'
		t.warnf("skipped %s: a %s, not a file, directory or symlink", shared.Show(guestPath), typeName(hdr.Typeflag))
		return nil
	}
}

// parents makes rel's parent directories, refusing any that this archive
// made a link, a file or a skipped entry, or that exists here as anything
// but a directory. Each one it makes counts as an entry.
func (t *tarCollector) parents(ctx context.Context, name, rel string) error {
	for i := 0; i < len(rel); i++ {
		if rel[i] != '/' {
			continue
		}
		dir := rel[:i]
		switch t.seen[dir] {
		case 'd':
			continue
		case 0:
		default:
			return t.refuse(name, "its parent %s is not a directory in the archive", shared.Show(dir))
		}
		if ctx.Err() != nil {
			return ctxErr(ctx)
		}
		t.entries++
		if t.lim.MaxFiles > 0 && t.entries > t.lim.MaxFiles {
			return t.filesLimit(path.Join(t.guestDir, dir))
		}
		t.seen[dir] = 'd'
		if err := t.mkdir(dir); err != nil {
			return err
		}
	}
	return nil
}

func (t *tarCollector) mkdir(rel string) error {
	if err := t.root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("collect artifacts: %w", err)
	}
	if fi, err := t.root.Lstat(rel); err != nil || !fi.IsDir() {
		return fmt.Errorf("collect artifacts: %s in %s exists and is not a directory", shared.Show(rel), t.res.Dir)
	}
	return nil
}

// hardLink links rel to a file this archive wrote, counting its size.
func (t *tarCollector) hardLink(hdr *tar.Header, rel, guestPath string) error {
	target, ok := entryName(hdr.Linkname)
	if !ok || target == "" || t.seen[target] != 'f' {
		return t.refuse(hdr.Name, "a hard link to %s, not a file of the archive", shared.Show(shared.Shorten(hdr.Linkname, maxShown)))
	}
	fi, err := t.root.Lstat(target)
	if err != nil {
		return fmt.Errorf("collect artifacts: %w", err)
	}
	if fi.Size() > t.lim.MaxBytes-t.res.Bytes {
		return t.bytesLimit(guestPath)
	}
	_ = t.root.Remove(rel) // a previous run's entry
	if err := t.root.Link(target, rel); err != nil {
		return fmt.Errorf("collect artifacts: %w", err)
	}
	t.seen[rel] = 'f'
	t.res.Files++
	t.res.Bytes += fi.Size()
	return nil
}

func typeName(flag byte) string {
	switch flag {
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	}
	return fmt.Sprintf("entry of tar type %q", flag)
}
