// Package artifacts copies a job's artifacts out of its guest, for
// CollectArtifacts (contract v2, docs/contract.md): through a file API that
// reports symlinks without following them, into a host directory written only
// through an os.Root, so that nothing the guest says can place a file outside
// it.
package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// FileTimeout bounds reading one guest entry: a FIFO in the guest is
// reported as a regular file and its read never answers.
const FileTimeout = shared.ArtifactReadTimeout

// Entry types a Source reports.
const (
	TypeFile      = "file"
	TypeDirectory = "directory"
	TypeSymlink   = "symlink"
)

// Entry is one guest path as the file API reports it, without following a
// final symlink.
type Entry struct {
	Type string // TypeFile, TypeDirectory, TypeSymlink (anything else is skipped)
	Mode fs.FileMode
	Size int64 // of a file, -1 when unknown
	// Entries are a directory's names, in any order.
	Entries []string
	// Target is a symlink's target, resolved to an absolute guest path by
	// the server.
	Target string
	// Body is a file's content; Collect closes it.
	Body io.ReadCloser
}

// Source reads guest paths. A missing path is an error wrapping
// fs.ErrNotExist (and only that: a missing instance is another error). Canceling ctx must end a blocked
// GetFile and a blocked read of the Body it returned.
type Source interface {
	GetFile(ctx context.Context, path string) (Entry, error)
}

// Options tune Collect.
type Options struct {
	// FileTimeout bounds each entry's read; 0: FileTimeout.
	FileTimeout time.Duration
	// InFlight is the number of guest reads at once; 0: InFlight.
	InFlight int
}

// InFlight is the default number of guest reads Collect has in flight.
const InFlight = 4

// ErrLimit is wrapped by the error of a collection that reached its byte
// cap or its entry cap.
var ErrLimit = errors.New("artifacts exceed their cap")

// Collect copies the guest directory guestDir, recursively, into destDir on
// this machine (created when missing), and stops at lim.MaxBytes of file
// content or lim.MaxFiles entries.
//
//   - Every write goes through an os.Root opened on destDir: no path it
//     writes, nor any link it follows, leaves destDir. destDir itself must
//     not be a symlink.
//   - No symlink is followed in the guest (the Source reports links as
//     links) nor here. A guest link becomes a link in the copy only when its
//     target lies inside guestDir (guestDir itself allowed); it is written
//     relative, so it stays inside the copy. Any other link is skipped and
//     named in the warnings.
//   - Regular files keep their permission bits without set-uid, set-gid or
//     sticky; directories are 0755. Other types are skipped and warned.
//   - A read that does not answer within the file timeout is an error
//     naming the file (a FIFO looks like a file to the file API).
//   - When the next file would take the total over lim.MaxBytes, or the
//     next entry (collected or skipped) over lim.MaxFiles, Collect stops,
//     keeps what it copied, and returns an error wrapping ErrLimit naming
//     the limit and the entry.
//   - When ctx ends, the error is its cause (see WithTimeout).
//   - A missing guestDir yields an empty result.
//
// Entries are visited in name order. The result counts regular files and
// kept links in Files, their content in Bytes.
func Collect(ctx context.Context, src Source, guestDir, destDir string, lim Limits, opts Options) (shared.CollectResult, error) {
	res := shared.CollectResult{Dir: destDir}
	if !path.IsAbs(guestDir) || path.Clean(guestDir) != guestDir {
		return res, shared.Errorf(shared.ErrInvalidInput, "artifacts.path", guestDir,
			"artifacts.path %s: must be absolute and clean", shared.Show(guestDir))
	}
	if opts.FileTimeout <= 0 {
		opts.FileTimeout = FileTimeout
	}
	if opts.InFlight <= 0 {
		opts.InFlight = InFlight
	}
	c := &collector{src: src, guestDir: guestDir, lim: lim, opts: opts, res: &res}

	top, err := c.get(ctx, guestDir)
	if isNotFound(err) {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		closeBody(top)
		return res, fmt.Errorf("collect artifacts: %w", err)
	}
	root, err := openDest(destDir)
	if err != nil {
		closeBody(top)
		return res, err
	}
	defer root.Close()
	c.root = root
	switch top.Type {
	case TypeDirectory:
		err := c.walk(ctx, top, opts.InFlight)
		if err != nil && ctx.Err() != nil && !errors.Is(err, ErrLimit) {
			err = ctxErr(ctx)
		}
		slices.Sort(res.Warnings) // read in any order: name order
		return res, err
	case TypeSymlink:
		c.warnf("skipped %s: the artifacts directory is a symlink to %s, not followed", shared.Show(guestDir), shared.Show(top.Target))
		return res, nil
	default:
		closeBody(top)
		c.warnf("skipped %s: the artifacts path is a %s, not a directory", shared.Show(guestDir), top.Type)
		return res, nil
	}
}

// openDest opens destDir as an os.Root, refusing it when it is a symlink
// (MkdirAll and OpenRoot would follow one anywhere) or anything but a
// directory. The opened directory must be the one Lstat saw, so a swap
// between the two is refused too.
func openDest(destDir string) (*os.Root, error) {
	refuse := func(what string) error {
		return shared.Errorf(shared.ErrPermission, "artifacts dir", destDir,
			"collect artifacts: destination %s %s: refusing to write through it", destDir, what)
	}
	fi, err := os.Lstat(destDir)
	if err != nil {
		return nil, fmt.Errorf("collect artifacts: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, refuse("is a symbolic link")
	}
	if !fi.IsDir() {
		return nil, refuse("is not a directory")
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, fmt.Errorf("collect artifacts: %w", err)
	}
	opened, err := root.Stat(".")
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("collect artifacts: %w", err)
	}
	if !os.SameFile(fi, opened) {
		root.Close()
		return nil, refuse("changed while it was opened")
	}
	return root, nil
}

type collector struct {
	src      Source
	guestDir string
	lim      Limits
	opts     Options
	root     *os.Root
	res      *shared.CollectResult

	mu       sync.Mutex // guards res, met, reserved, and the walk's state below
	met      int64      // entries met, the top directory not counted
	dropped  int        // warnings past MaxWarnings, left out
	reserved int64      // declared sizes of files being copied, not yet written
	// The walk: entries to read, entries queued or being read, the
	// first error.
	queue   []task
	pending int
	err     error
	wake    *sync.Cond
}

// task is one guest entry to read: its path relative to guestDir.
type task struct{ rel string }

// bytesLimit is the error of a file that crosses the byte cap.
func (c *collector) bytesLimit(guestPath string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return shared.Errorf(shared.ErrInvalidInput, "artifacts.max_bytes", fmt.Sprint(c.lim.MaxBytes),
		"collect artifacts: %s takes the artifacts over artifacts.max_bytes %d (%d bytes copied before it): %w",
		shared.Show(guestPath), c.lim.MaxBytes, c.res.Bytes, ErrLimit)
}

// filesLimit is the error of an entry past the entry cap.
func (c *collector) filesLimit(guestPath string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.filesLimitLocked(guestPath)
}

func (c *collector) filesLimitLocked(guestPath string) error {
	return shared.Errorf(shared.ErrInvalidInput, "artifacts.max_files", fmt.Sprint(c.lim.MaxFiles),
		"collect artifacts: %s takes the artifacts over artifacts.max_files %d entries (%d files copied before it): %w",
		shared.Show(guestPath), c.lim.MaxFiles, c.res.Files, ErrLimit)
}

// MaxWarnings bounds the warnings of one collection, MaxWarning the bytes
// of each: the guest chooses what they name (a link's target may be
// 200 KiB of control characters, escaped four times its size).
const (
	MaxWarnings = 1000
	MaxWarning  = 1024
)

func (c *collector) warnf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.res.Warnings) < MaxWarnings {
		c.res.Warnings = append(c.res.Warnings, shared.Shorten(fmt.Sprintf(format, args...), MaxWarning))
		return
	}
	c.dropped++
	more := fmt.Sprintf("%d more warnings past the first %d are left out", c.dropped, MaxWarnings)
	if len(c.res.Warnings) == MaxWarnings {
		c.res.Warnings = append(c.res.Warnings, more)
	} else {
		c.res.Warnings[MaxWarnings] = more
	}
}

func isNotFound(err error) bool {
	return err != nil && errors.Is(err, fs.ErrNotExist)
}

func closeBody(e Entry) {
	if e.Body != nil {
		e.Body.Close()
	}
}

// get reads one guest path within the per-file timeout. The entry's body,
// if any, must be read within the same bound: get returns a body that
// fails once it passes.
func (c *collector) get(ctx context.Context, guestPath string) (Entry, error) {
	fctx, cancel := context.WithTimeout(ctx, c.opts.FileTimeout)
	e, err := c.src.GetFile(fctx, guestPath)
	if err != nil {
		cancel()
		if ctx.Err() == nil && errors.Is(fctx.Err(), context.DeadlineExceeded) {
			return Entry{}, c.timeout(guestPath, err)
		}
		if isNotFound(err) {
			return Entry{}, err
		}
		return Entry{}, fmt.Errorf("collect artifacts: read %s in the guest: %w", shared.Show(guestPath), err)
	}
	if e.Body == nil {
		cancel()
		return e, nil
	}
	// Closing the body is what ends a blocked read, whatever the Source.
	body := e.Body // the closure must not see the wrapper set below
	stop := context.AfterFunc(fctx, func() { body.Close() })
	e.Body = &boundBody{ReadCloser: body, ctx: ctx, fctx: fctx, done: func() { stop(); cancel() }}
	return e, nil
}

func (c *collector) timeout(guestPath string, err error) error {
	return shared.Errorf(shared.ErrUnavailable, "artifacts.path", guestPath,
		"collect artifacts: %s did not answer within %s (a FIFO?): %w", shared.Show(guestPath), c.opts.FileTimeout, err)
}

// boundBody is a body read under the per-file timeout.
type boundBody struct {
	io.ReadCloser
	ctx, fctx context.Context
	done      func()
}

func (b *boundBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.fctx.Err() != nil {
		err = b.fctx.Err()
	}
	return n, err
}

func (b *boundBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// walk copies the top directory's tree with inFlight workers, each
// reading one guest entry at a time; the first error stops them all.
func (c *collector) walk(ctx context.Context, top Entry, inFlight int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.wake = sync.NewCond(&c.mu)
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.wake.Broadcast()
	})
	defer stop()
	c.mu.Lock()
	err := c.enqueue("", top)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for {
				c.mu.Lock()
				for len(c.queue) == 0 && c.pending > 0 && c.err == nil && ctx.Err() == nil {
					c.wake.Wait()
				}
				if len(c.queue) == 0 || c.err != nil || ctx.Err() != nil {
					c.mu.Unlock()
					return
				}
				t := c.queue[0]
				c.queue = c.queue[1:]
				c.mu.Unlock()
				err := c.entry(ctx, t.rel)
				c.mu.Lock()
				if err != nil && c.err == nil {
					c.err = err
					// A limit stops the walk but lets the copies in
					// flight end (each within its own bound), so what
					// was read before the limit stays, whichever worker
					// met it first; any other failure ends them too.
					if !errors.Is(err, ErrLimit) {
						cancel(err)
					}
				}
				c.pending--
				c.wake.Broadcast()
				c.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if c.err == nil && ctx.Err() != nil {
		return ctxErr(ctx)
	}
	return c.err
}

// enqueue queues the entries of the guest directory at rel (relative to
// guestDir; "" is guestDir) whose entry is e, counting them against the
// entry cap. c.mu is held.
func (c *collector) enqueue(rel string, e Entry) error {
	closeBody(e)
	names := slices.Clone(e.Entries)
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			c.res.Warnings = append(c.res.Warnings, fmt.Sprintf("skipped %s in %s: not a file name", shared.Show(name), shared.Show(path.Join(c.guestDir, rel))))
			continue
		}
		childRel := name
		if rel != "" {
			childRel = rel + "/" + name
		}
		c.met++
		if c.lim.MaxFiles > 0 && c.met > c.lim.MaxFiles {
			return c.filesLimitLocked(path.Join(c.guestDir, childRel))
		}
		c.queue = append(c.queue, task{rel: childRel})
		c.pending++
	}
	return nil
}

// entry reads one guest entry and copies it; a directory's entries are
// queued.
func (c *collector) entry(ctx context.Context, childRel string) error {
	guestPath := path.Join(c.guestDir, childRel)
	child, err := c.get(ctx, guestPath)
	if isNotFound(err) {
		c.warnf("skipped %s: gone while collecting", shared.Show(guestPath))
		return nil
	}
	if err != nil {
		return err
	}
	switch child.Type {
	case TypeDirectory:
		if err := c.root.Mkdir(childRel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			closeBody(child)
			return fmt.Errorf("collect artifacts: %w", err)
		}
		if fi, err := c.root.Lstat(childRel); err != nil || !fi.IsDir() {
			closeBody(child)
			return fmt.Errorf("collect artifacts: %s in %s exists and is not a directory", shared.Show(childRel), c.res.Dir)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.enqueue(childRel, child)
	case TypeSymlink:
		closeBody(child)
		c.link(childRel, guestPath, child.Target)
		return nil
	case TypeFile:
		return c.file(ctx, childRel, guestPath, child)
	default:
		closeBody(child)
		c.warnf("skipped %s: a %s, not a file, directory or symlink", shared.Show(guestPath), shared.Show(child.Type))
		return nil
	}
}

// link writes a link for a guest symlink whose target is inside guestDir.
func (c *collector) link(rel, guestPath, target string) {
	inside := path.IsAbs(target) && path.Clean(target) == target &&
		(target == c.guestDir || strings.HasPrefix(target, c.guestDir+"/") || c.guestDir == "/")
	if !inside {
		c.warnf("skipped symlink %s -> %s: its target is outside %s", shared.Show(guestPath), shared.Show(target), shared.Show(c.guestDir))
		return
	}
	from := path.Dir(guestPath)
	relTarget, ok := relPath(from, target)
	if !ok {
		c.warnf("skipped symlink %s -> %s: no relative form", shared.Show(guestPath), shared.Show(target))
		return
	}
	_ = c.root.Remove(rel) // a previous attempt's entry
	if err := c.root.Symlink(relTarget, rel); err != nil {
		c.warnf("skipped symlink %s -> %s: %v", shared.Show(guestPath), shared.Show(target), err)
		return
	}
	c.mu.Lock()
	c.res.Files++
	c.mu.Unlock()
}

// relPath is target relative to dir, both absolute and clean.
func relPath(dir, target string) (string, bool) {
	split := func(p string) []string {
		if p == "/" {
			return nil
		}
		return strings.Split(p[1:], "/")
	}
	d, t := split(dir), split(target)
	i := 0
	for i < len(d) && i < len(t) && d[i] == t[i] {
		i++
	}
	parts := make([]string, 0, len(d)-i+len(t)-i)
	for range d[i:] {
		parts = append(parts, "..")
	}
	parts = append(parts, t[i:]...)
	if len(parts) == 0 {
		return ".", true
	}
	return strings.Join(parts, "/"), true
}

// file copies one regular file, within the byte cap: each write takes its
// bytes from what is left under it, so files copied at once never pass it
// together.
func (c *collector) file(ctx context.Context, rel, guestPath string, e Entry) error {
	defer closeBody(e)
	// A declared size is reserved under the cap before the copy, so
	// files read at once cannot pass it together. Compared as room
	// left, never as a sum: no overflow for any max.
	w := &capWriter{c: c}
	if e.Size >= 0 {
		c.mu.Lock()
		room := c.lim.MaxBytes - c.res.Bytes - c.reserved
		if e.Size > room {
			c.mu.Unlock()
			return c.bytesLimit(guestPath)
		}
		c.reserved += e.Size
		w.own = e.Size
		c.mu.Unlock()
	}
	defer func() {
		c.mu.Lock()
		c.reserved -= w.own
		w.own = 0
		c.mu.Unlock()
	}()
	perm := e.Mode.Perm() // set-uid, set-gid, sticky dropped
	_ = c.root.Remove(rel)
	f, err := c.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("collect artifacts: %w", err)
	}
	var body io.Reader = eofReader{}
	if e.Body != nil {
		body = e.Body
	}
	w.f = f
	_, err = io.Copy(w, body)
	if errors.Is(err, errCap) {
		err = c.bytesLimit(guestPath)
	} else if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = c.timeout(guestPath, err)
		} else {
			err = fmt.Errorf("collect artifacts: read %s in the guest: %w", shared.Show(guestPath), err)
		}
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		_ = c.root.Remove(rel) // no partial file, no bytes counted
		c.res.Bytes -= w.n
		return err
	}
	c.res.Files++
	return nil
}

// errCap: a write would pass the byte cap.
var errCap = errors.New("over the byte cap")

// capWriter writes to f what the byte cap leaves room for, counting it in
// the result as it goes: first from its own reservation, then from what no
// file has reserved.
type capWriter struct {
	c   *collector
	f   io.Writer
	n   int64 // counted
	own int64 // reserved and not yet written
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	fromOwn := min(int64(len(p)), w.own)
	w.own -= fromOwn
	w.c.reserved -= fromOwn
	extra := int64(len(p)) - fromOwn
	room := w.c.lim.MaxBytes - w.c.res.Bytes - fromOwn - w.c.reserved
	over := extra > room
	if over {
		extra = room
	}
	p = p[:fromOwn+extra]
	w.c.res.Bytes += int64(len(p))
	w.n += int64(len(p))
	w.c.mu.Unlock()
	n, err := w.f.Write(p)
	if n < len(p) {
		w.c.mu.Lock()
		w.c.res.Bytes -= int64(len(p) - n)
		w.n -= int64(len(p) - n)
		w.c.mu.Unlock()
	}
	if err == nil && over {
		err = errCap
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
