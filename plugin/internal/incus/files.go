package incus

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pikaci/vmexec/shared"
)

// File types the file API reports.
const (
	FileTypeFile      = "file"
	FileTypeDirectory = "directory"
	FileTypeSymlink   = "symlink"
)

// File is one path in an instance as the file API returns it. The API
// never follows a symlink at the end of the path (it returns the link's
// target instead); symlinks in the middle of the path resolve inside the
// instance.
type File struct {
	// Type is FileTypeFile, FileTypeDirectory or FileTypeSymlink. FIFOs,
	// sockets and devices are reported as "file" by the server.
	Type string
	// Mode holds the permission bits the server reports (X-Incus-Mode or
	// X-LXD-Mode); set-uid, set-gid and sticky are not among them.
	Mode os.FileMode
	// UID and GID are the owner inside the instance.
	UID, GID int
	// Size is the file's length from Content-Length, -1 when unknown.
	Size int64
	// Entries are a directory's names, unsorted, without "." and "..".
	Entries []string
	// Target is a symlink's target as the server resolved it (an absolute
	// path in the instance), never its content.
	Target string
	// Body is a regular file's content; the caller closes it. A FIFO's
	// read blocks until something writes to it: bound it with the ctx
	// given to GetFile.
	Body io.ReadCloser
}

// maxListing bounds a directory listing or a symlink target read into
// memory.
const maxListing = 16 << 20

// GetFile reads path in the instance: a file's content as a stream, a
// directory's entries, or a symlink's target. ctx bounds the whole read,
// the body's too: a file whose read does not answer (a FIFO) ends with it.
// The answer's headers, and a listing or a target whole, must come within
// the client's request bound too (a RequestTimeoutError). A missing path
// is an error of kind ErrNotFound.
func (c *Client) GetFile(ctx context.Context, project, instance, path string) (File, error) {
	project = normProject(project)
	reqPath := "/1.0/instances/" + url.PathEscape(instance) + "/files?path=" + url.QueryEscape(path) + "&project=" + url.QueryEscape(project)
	fail := func(err error) (File, error) {
		return File{}, wrapKind(err, "path", path, "incus: read %s in instance %s in project %s: %w",
			shared.Show(path), shared.Show(instance), shared.Show(project), err)
	}
	// The request's bound covers everything but a file's content, which
	// the caller reads under ctx alone.
	rctx, cancel := context.WithCancel(ctx)
	var bounded atomic.Bool
	bound := time.AfterFunc(c.requestTimeout, func() {
		bounded.Store(true)
		cancel()
	})
	keep := false // the body outlives the call: cancel on its Close
	defer func() {
		bound.Stop()
		if !keep {
			cancel()
		}
	}()
	timedOut := func(err error) error {
		if bounded.Load() && ctx.Err() == nil {
			return &RequestTimeoutError{Bound: c.requestTimeout}
		}
		return err
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.base+reqPath, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(&APIError{Method: http.MethodGet, Path: reqPath, Err: timedOut(transportError(err))})
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorText*4))
		return fail(decodeError(http.MethodGet, reqPath, resp.StatusCode, data))
	}
	f := File{
		Type: fileHeader(resp.Header, "Type"),
		UID:  headerInt(resp.Header, "Uid"),
		GID:  headerInt(resp.Header, "Gid"),
		Size: resp.ContentLength,
	}
	if m, err := strconv.ParseUint(fileHeader(resp.Header, "Mode"), 8, 32); err == nil {
		f.Mode = os.FileMode(m) & os.ModePerm
	}
	switch f.Type {
	case FileTypeFile:
		if !bound.Stop() {
			resp.Body.Close()
			return fail(&APIError{Method: http.MethodGet, Path: reqPath, Err: timedOut(context.Canceled)})
		}
		keep = true
		f.Body = cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		return f, nil
	case FileTypeDirectory:
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxListing))
		if err != nil {
			return fail(&APIError{Method: http.MethodGet, Path: reqPath, Err: timedOut(err)})
		}
		var env envelope
		if err := json.Unmarshal(data, &env); err != nil || json.Unmarshal(env.Metadata, &f.Entries) != nil {
			return fail(&APIError{Method: http.MethodGet, Path: reqPath, StatusCode: http.StatusBadGateway,
				Message: "a directory listing that is not a list of names"})
		}
		f.Size = -1
		return f, nil
	case FileTypeSymlink:
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxListing))
		if err != nil {
			return fail(&APIError{Method: http.MethodGet, Path: reqPath, Err: timedOut(err)})
		}
		f.Target = string(data)
		return f, nil
	}
	resp.Body.Close()
	return fail(&APIError{Method: http.MethodGet, Path: reqPath, StatusCode: http.StatusBadGateway,
		Message: "unknown file type " + shared.Show(f.Type)})
}

// fileHeader reads X-Incus-<name>, else X-LXD-<name> (Incus and LXD).
func fileHeader(h http.Header, name string) string {
	if v := h.Get("X-Incus-" + name); v != "" {
		return v
	}
	return h.Get("X-LXD-" + name)
}

func headerInt(h http.Header, name string) int {
	n, err := strconv.Atoi(fileHeader(h, name))
	if err != nil {
		return -1
	}
	return n
}

// cancelOnClose ends a file read's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// AppendNothing appends zero bytes to path in the instance through the
// file API: a regular file is left as it is, and a FIFO is opened for
// writing and closed, which ends a read of it that waits for a writer
// (a GetFile given up on). The server does it, not a program of the
// guest's, which a hostile job may have replaced.
func (c *Client) AppendNothing(ctx context.Context, project, instance, path string) error {
	project = normProject(project)
	reqPath := "/1.0/instances/" + url.PathEscape(instance) + "/files?path=" + url.QueryEscape(path) + "&project=" + url.QueryEscape(project)
	h := http.Header{}
	for _, p := range []string{"X-Incus-", "X-LXD-"} {
		h.Set(p+"type", "file")
		h.Set(p+"write", "append")
	}
	if _, err := c.do(ctx, http.MethodPost, reqPath, nil, h); err != nil {
		return wrapKind(err, "path", path, "incus: append to %s in instance %s in project %s: %w",
			shared.Show(path), shared.Show(instance), shared.Show(project), err)
	}
	return nil
}
