package artifacts_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/shared"
)

// fakeGuest is a guest filesystem as the Incus file API shows it: links
// reported with their resolved absolute target, FIFOs as files that never
// answer.
type fakeGuest map[string]fakeEntry

type fakeEntry struct {
	typ    string
	mode   fs.FileMode
	body   string
	target string // symlink: the resolved target
	hang   bool   // a FIFO: reading blocks until ctx ends
}

func (g fakeGuest) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	e, ok := g[p]
	if !ok {
		return artifacts.Entry{}, &fs.PathError{Op: "get", Path: p, Err: fs.ErrNotExist}
	}
	switch e.typ {
	case artifacts.TypeDirectory:
		var names []string
		for q := range g {
			if q != p && path.Dir(q) == p {
				names = append(names, path.Base(q))
			}
		}
		return artifacts.Entry{Type: e.typ, Mode: e.mode, Entries: names}, nil
	case artifacts.TypeSymlink:
		return artifacts.Entry{Type: e.typ, Mode: 0o777, Target: e.target}, nil
	}
	var body io.ReadCloser = io.NopCloser(strings.NewReader(e.body))
	size := int64(len(e.body))
	if e.hang {
		body, size = &hangingBody{ctx: ctx, closed: make(chan struct{})}, 0
	}
	return artifacts.Entry{Type: e.typ, Mode: e.mode, Size: size, Body: body}, nil
}

// hangingBody blocks until closed (the collector's timeout) or ctx ends.
type hangingBody struct {
	ctx    context.Context
	closed chan struct{}
}

func (h *hangingBody) Read([]byte) (int, error) {
	select {
	case <-h.closed:
		return 0, errors.New("read on closed body")
	case <-h.ctx.Done():
		return 0, h.ctx.Err()
	}
}

func (h *hangingBody) Close() error {
	select {
	case <-h.closed:
	default:
		close(h.closed)
	}
	return nil
}

const art = "/run/pika-cloud/artifacts"

func guest() fakeGuest {
	return fakeGuest{
		art:                        {typ: "directory", mode: 0o755},
		art + "/a.txt":             {typ: "file", mode: 0o644, body: "alpha"},
		art + "/run.sh":            {typ: "file", mode: 0o4755, body: "#!/bin/sh\n"}, // set-uid dropped
		art + "/sub":               {typ: "directory", mode: 0o700},
		art + "/sub/deeper":        {typ: "directory", mode: 0o755},
		art + "/sub/deeper/b.bin":  {typ: "file", mode: 0o600, body: "bravo!"},
		art + "/sub/shadow":        {typ: "symlink", target: "/etc/shadow"},
		art + "/sub/up":            {typ: "symlink", target: "/"}, // ../../.. resolved by the server
		art + "/sub/to-a":          {typ: "symlink", target: art + "/a.txt"},
		art + "/sub/deeper/to-sub": {typ: "symlink", target: art + "/sub"},
		art + "/sibling-prefix":    {typ: "symlink", target: art + "-evil/x"},
		art + "/odd":               {typ: "socket", mode: 0o755},
	}
}

// treeOf describes dest: type, permission bits, content or link target.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			out[rel] = "dir " + fi.Mode().Perm().String()
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link " + target
		default:
			b, _ := os.ReadFile(p)
			out[rel] = fi.Mode().String() + " " + string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCollect(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "job", "artifacts")
	res, err := artifacts.Collect(t.Context(), guest(), art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".":                 "dir -rwxr-xr-x",
		"a.txt":             "-rw-r--r-- alpha",
		"run.sh":            "-rwxr-xr-x #!/bin/sh\n",
		"sub":               "dir -rwxr-xr-x",
		"sub/deeper":        "dir -rwxr-xr-x",
		"sub/deeper/b.bin":  "-rw------- bravo!",
		"sub/deeper/to-sub": "link ..",
		"sub/to-a":          "link ../a.txt",
	}
	if diff := cmp.Diff(want, treeOf(t, dest)); diff != "" {
		t.Errorf("copy (-want +got):\n%s", diff)
	}
	if res.Dir != dest || res.Files != 5 || res.Bytes != int64(len("alpha")+len("#!/bin/sh\n")+len("bravo!")) {
		t.Errorf("result %+v", res)
	}
	for _, w := range []string{`"/etc/shadow"`, `"/"`, art + `-evil/x`, `"socket"`} {
		found := false
		for _, got := range res.Warnings {
			found = found || strings.Contains(got, w)
		}
		if !found {
			t.Errorf("no warning names %s; warnings: %q", w, res.Warnings)
		}
	}
	if len(res.Warnings) != 4 {
		t.Errorf("warnings %q, want 4", res.Warnings)
	}
}

func TestCollectMissingDir(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "artifacts")
	res, err := artifacts.Collect(t.Context(), fakeGuest{}, art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{})
	if err != nil || res.Files != 0 || len(res.Warnings) != 0 {
		t.Errorf("missing guest dir: %+v, %v; want an empty result", res, err)
	}
}

func TestCollectByteCap(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "artifacts")
	// a.txt (5) and run.sh (10) fit in 15; sub/deeper/b.bin (6) crosses it.
	res, err := artifacts.Collect(t.Context(), guest(), art, dest, artifacts.Limits{MaxBytes: 15}, artifacts.Options{})
	if !errors.Is(err, artifacts.ErrLimit) || !strings.Contains(err.Error(), "15") || !strings.Contains(err.Error(), art+"/sub/deeper/b.bin") {
		t.Fatalf("error %v, want ErrLimit naming 15 and b.bin", err)
	}
	if res.Bytes != 15 {
		t.Errorf("copied %d bytes before the cap, want 15", res.Bytes)
	}
	got := treeOf(t, dest)
	if got["a.txt"] == "" || got["run.sh"] == "" {
		t.Errorf("files copied before the cap are gone: %v", got)
	}
	if _, ok := got["sub/deeper/b.bin"]; ok {
		t.Error("the file that crossed the cap was written")
	}
}

// A file that says it is small but is not: the cap holds on what is read.
func TestCollectByteCapLyingSize(t *testing.T) {
	g := fakeGuest{art: {typ: "directory"}, art + "/big": {typ: "file", mode: 0o644, body: strings.Repeat("x", 100)}}
	lying := lyingSize{g}
	dest := filepath.Join(t.TempDir(), "artifacts")
	_, err := artifacts.Collect(t.Context(), lying, art, dest, artifacts.Limits{MaxBytes: 50}, artifacts.Options{})
	if !errors.Is(err, artifacts.ErrLimit) {
		t.Fatalf("error %v, want ErrLimit", err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "big")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial file left: %v", err)
	}
}

type lyingSize struct{ fakeGuest }

func (l lyingSize) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	e, err := l.fakeGuest.GetFile(ctx, p)
	e.Size = -1
	return e, err
}

func TestCollectHangingFile(t *testing.T) {
	g := guest()
	g[art+"/fifo"] = fakeEntry{typ: "file", mode: 0o644, hang: true}
	dest := filepath.Join(t.TempDir(), "artifacts")
	_, err := artifacts.Collect(t.Context(), g, art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{FileTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), art+"/fifo") || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("error %v, want one naming the hanging file", err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "fifo")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial file left for the FIFO: %v", err)
	}
}

// A hostile listing cannot name a path outside the copy.
func TestCollectHostileNames(t *testing.T) {
	g := hostileListing{guest()}
	dest := filepath.Join(t.TempDir(), "job", "artifacts")
	res, err := artifacts.Collect(t.Context(), g, art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "..", "escaped")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a listed name escaped the copy: %v", err)
	}
	n := 0
	for _, w := range res.Warnings {
		if strings.Contains(w, "not a file name") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("warnings %q, want 3 for bad names", res.Warnings)
	}
}

type hostileListing struct{ fakeGuest }

func (h hostileListing) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	e, err := h.fakeGuest.GetFile(ctx, p)
	if p == art {
		e.Entries = append(e.Entries, "..", "../escaped", ".")
	}
	return e, err
}

// A missing instance is an error, not an empty result.
func TestCollectOtherErrors(t *testing.T) {
	_, err := artifacts.Collect(t.Context(), failing{}, art, filepath.Join(t.TempDir(), "a"), artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{})
	if err == nil || !strings.Contains(err.Error(), "Instance not found") {
		t.Errorf("error %v, want the source's error", err)
	}
}

type failing struct{}

func (failing) GetFile(context.Context, string) (artifacts.Entry, error) {
	return artifacts.Entry{}, errors.New("404 Instance not found")
}

// TestCollectMaxBytesMaxInt64: the largest cap copies every file whole
// (room+1 once wrapped to a negative limit and every file came out empty).
func TestCollectMaxBytesMaxInt64(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "artifacts")
	res, err := artifacts.Collect(t.Context(), guest(), art, dest, artifacts.Limits{MaxBytes: math.MaxInt64}, artifacts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := treeOf(t, dest)
	if got["a.txt"] != "-rw-r--r-- alpha" || got["sub/deeper/b.bin"] != "-rw------- bravo!" {
		t.Errorf("files not copied whole: %v", got)
	}
	if res.Files != 5 || res.Bytes != int64(len("alpha")+len("#!/bin/sh\n")+len("bravo!")) {
		t.Errorf("result %+v", res)
	}
}

// hugeSize reports every file as the largest size there is.
type hugeSize struct{ fakeGuest }

func (h hugeSize) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	e, err := h.fakeGuest.GetFile(ctx, p)
	if e.Type == artifacts.TypeFile {
		e.Size = math.MaxInt64
	}
	return e, err
}

// TestCollectHugeSizeAfterBytes: under the largest cap, a declared size
// that would overflow the running total is over the cap, not a negative sum
// that passes.
func TestCollectHugeSizeAfterBytes(t *testing.T) {
	g := fakeGuest{art: {typ: "directory"}, art + "/a": {typ: "file", mode: 0o644, body: "x"}, art + "/b": {typ: "file", mode: 0o644, body: "y"}}
	dest := filepath.Join(t.TempDir(), "artifacts")
	_, err := artifacts.Collect(t.Context(), hugeSize{g}, art, dest, artifacts.Limits{MaxBytes: math.MaxInt64}, artifacts.Options{})
	if !errors.Is(err, artifacts.ErrLimit) {
		t.Fatalf("error %v, want ErrLimit", err)
	}
}

// TestCollectRefusesSymlinkedDest: a destination that is a symlink (to a
// directory elsewhere) is refused naming it, and nothing is written where it
// points.
func TestCollectRefusesSymlinkedDest(t *testing.T) {
	tmp := t.TempDir()
	elsewhere := filepath.Join(tmp, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(tmp, "job", "artifacts")
	if err := os.Mkdir(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dest); err != nil {
		t.Fatal(err)
	}
	_, err := artifacts.Collect(t.Context(), guest(), art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{})
	if err == nil || !errors.Is(err, shared.ErrPermission) || !strings.Contains(err.Error(), dest) || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked destination: %v, want a refusal naming it", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("written through the link: %v", entries)
	}
}

// Every entry met counts against max_files, skipped ones too, and the
// error names the limit.
func TestCollectStopsAtMaxFiles(t *testing.T) {
	g := fakeGuest{art: {typ: "directory"}}
	for i := range 12 {
		g[fmt.Sprintf("%s/f%02d", art, i)] = fakeEntry{typ: "file", mode: 0o644, body: "x"}
	}
	_, err := artifacts.Collect(t.Context(), g, art, t.TempDir(), artifacts.Limits{MaxBytes: 1 << 20, MaxFiles: 10}, artifacts.Options{})
	if !errors.Is(err, artifacts.ErrLimit) || !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "artifacts.max_files 10") {
		t.Fatalf("error %v, want the entry cap named", err)
	}
	res, err := artifacts.Collect(t.Context(), g, art, t.TempDir(), artifacts.Limits{MaxBytes: 1 << 20, MaxFiles: 12}, artifacts.Options{})
	if err != nil || res.Files != 12 {
		t.Fatalf("12 entries under max_files 12: %+v, %v", res, err)
	}
}

// The whole collection is bounded by artifacts.timeout_secs, whatever the
// per-file bound.
func TestCollectBoundedByTheCollectionTimeout(t *testing.T) {
	g := guest()
	g[art+"/fifo"] = fakeEntry{typ: "file", mode: 0o644, hang: true}
	ctx, cancel := artifacts.WithTimeout(t.Context(), 1)
	defer cancel()
	_, err := artifacts.Collect(ctx, g, art, t.TempDir(), artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{FileTimeout: time.Hour})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "artifacts.timeout_secs 1") {
		t.Fatalf("error %v, want the collection's time limit named", err)
	}
}

// countingGuest records how many reads are in flight at once; each read
// takes a moment.
type countingGuest struct {
	fakeGuest
	mu       sync.Mutex
	now, max int
}

func (c *countingGuest) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	c.mu.Lock()
	c.now++
	c.max = max(c.max, c.now)
	c.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	defer func() {
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
	}()
	return c.fakeGuest.GetFile(ctx, p)
}

// The file API is read with a few requests in flight, never more than
// InFlight, and the copy is the same as one read at a time gives.
func TestCollectKeepsAFewReadsInFlight(t *testing.T) {
	g := fakeGuest{art: {typ: "directory"}, art + "/d": {typ: "directory"}}
	for i := range 40 {
		g[fmt.Sprintf("%s/d/f%02d", art, i)] = fakeEntry{typ: "file", mode: 0o644, body: fmt.Sprint(i)}
	}
	cg := &countingGuest{fakeGuest: g}
	dest := filepath.Join(t.TempDir(), "a")
	res, err := artifacts.Collect(t.Context(), cg, art, dest, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{InFlight: 3})
	if err != nil || res.Files != 40 {
		t.Fatalf("%+v, %v", res, err)
	}
	if cg.max < 2 || cg.max > 3 {
		t.Errorf("%d reads in flight at most, want 2 or 3 (InFlight 3)", cg.max)
	}
	serial := filepath.Join(t.TempDir(), "b")
	if _, err := artifacts.Collect(t.Context(), g, art, serial, artifacts.Limits{MaxBytes: 1 << 20}, artifacts.Options{InFlight: 1}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(treeOf(t, serial), treeOf(t, dest)); diff != "" {
		t.Errorf("in flight vs one at a time (-serial +parallel):\n%s", diff)
	}
}

// Files copied at once never pass the byte cap together.
func TestCollectByteCapHoldsWithReadsInFlight(t *testing.T) {
	g := fakeGuest{art: {typ: "directory"}}
	for i := range 20 {
		g[fmt.Sprintf("%s/f%02d", art, i)] = fakeEntry{typ: "file", mode: 0o644, body: strings.Repeat("x", 100)}
	}
	dest := t.TempDir()
	res, err := artifacts.Collect(t.Context(), lyingSize{g}, art, dest, artifacts.Limits{MaxBytes: 1050}, artifacts.Options{InFlight: 8})
	if !errors.Is(err, artifacts.ErrLimit) {
		t.Fatalf("error %v, want ErrLimit", err)
	}
	var onDisk int64
	for _, v := range treeOf(t, dest) {
		if strings.HasPrefix(v, "-") {
			onDisk += int64(len(v) - len("-rw-r--r-- "))
		}
	}
	if onDisk > 1050 || res.Bytes != onDisk || res.Bytes != 100*int64(res.Files) {
		t.Errorf("%d bytes on disk, result %+v: want whole files only, at most 1050 bytes", onDisk, res)
	}
}

// A limit met by one read does not cut short another read in flight: a
// file read before it stays, whichever worker met the limit first.
func TestCollectLimitLetsTheReadsInFlightEnd(t *testing.T) {
	release := make(chan struct{})
	g := heldGuest{fakeGuest: fakeGuest{
		art:              {typ: "directory"},
		art + "/a.txt":   {typ: "file", mode: 0o644, body: "abc\n"},
		art + "/big.txt": {typ: "file", mode: 0o644, body: strings.Repeat("x", 26)},
	}, hold: art + "/a.txt", release: release, trigger: art + "/big.txt"}
	dest := filepath.Join(t.TempDir(), "artifacts")
	res, err := artifacts.Collect(t.Context(), g, art, dest, artifacts.Limits{MaxBytes: 10}, artifacts.Options{InFlight: 2})
	if !errors.Is(err, artifacts.ErrLimit) {
		t.Fatalf("error %v, want ErrLimit", err)
	}
	if got := treeOf(t, dest); got["a.txt"] == "" || res.Files != 1 || res.Bytes != 4 {
		t.Errorf("tree %v, result %+v: want a.txt (read while the limit was met) kept and counted", got, res)
	}
}

// heldGuest holds the body of hold until trigger is read.
type heldGuest struct {
	fakeGuest
	hold, trigger string
	release       chan struct{}
}

func (g heldGuest) GetFile(ctx context.Context, p string) (artifacts.Entry, error) {
	e, err := g.fakeGuest.GetFile(ctx, p)
	switch p {
	case g.trigger:
		close(g.release)
	case g.hold:
		e.Body = &heldBody{ctx: ctx, release: g.release, r: e.Body}
	}
	return e, err
}

type heldBody struct {
	ctx     context.Context
	release chan struct{}
	r       io.ReadCloser
}

// Read waits for the release, then a little more: time for a limit met
// at the trigger to end this read, if it would.
func (b *heldBody) Read(p []byte) (int, error) {
	select {
	case <-b.release:
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	}
	select {
	case <-time.After(200 * time.Millisecond):
		return b.r.Read(p)
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	}
}

func (b *heldBody) Close() error { return b.r.Close() }
