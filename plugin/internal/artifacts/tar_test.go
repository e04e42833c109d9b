package artifacts_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin/internal/artifacts"
	"github.com/pikaci/vmexec/shared"
)

// tarOf writes the headers (and, for files, a body of hdr.Size bytes of
// "x", or body when given) as a tar archive.
func tarOf(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		body := e.body
		if h.Typeflag == tar.TypeReg && body == "" {
			body = strings.Repeat("x", int(h.Size))
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func dirE(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}
func fileE(name, body string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}
func linkE(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

// stream is an archive as the exec's stdout: closing it is what the
// collector does when its context ends.
func stream(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func limits() artifacts.Limits { return artifacts.Limits{MaxBytes: 1 << 20, MaxFiles: 1000} }

func TestCollectTarKeepsWhatTheRulesAllow(t *testing.T) {
	archive := tarOf(t,
		dirE("./"),
		fileE("./a.txt", "alpha"),
		tarEntry{hdr: tar.Header{Name: "./run.sh", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "#!/bin/sh\n"},
		tarEntry{hdr: tar.Header{Name: "./sub/", Typeflag: tar.TypeDir, Mode: 0o700}},
		tarEntry{hdr: tar.Header{Name: "./sub/deeper/b.bin", Typeflag: tar.TypeReg, Mode: 0o2600}, body: "bravo!"}, // parent made
		linkE("./sub/shadow", "/etc/shadow"),
		linkE("./sub/up", "../.."),
		linkE("./sub/to-a", "../a.txt"),
		linkE("./sub/abs-to-a", art+"/a.txt"),
		linkE("./sub/deeper/to-sub", ".."),
		linkE("./sibling-prefix", "../artifacts-evil/x"),
		linkE("./top", "."),
		tarEntry{hdr: tar.Header{Name: "./pipe", Typeflag: tar.TypeFifo, Mode: 0o644}},
		tarEntry{hdr: tar.Header{Name: "./tty", Typeflag: tar.TypeChar, Mode: 0o644, Devmajor: 5}},
		tarEntry{hdr: tar.Header{Name: "./hard", Typeflag: tar.TypeLink, Linkname: "./a.txt"}},
	)
	dest := filepath.Join(t.TempDir(), "job", "artifacts")
	res, err := artifacts.CollectTar(t.Context(), stream(archive), art, dest, limits())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		".":                 "dir -rwxr-xr-x",
		"a.txt":             "-rw-r--r-- alpha",
		"hard":              "-rw-r--r-- alpha",
		"run.sh":            "-rwxr-xr-x #!/bin/sh\n",
		"sub":               "dir -rwxr-xr-x",
		"sub/deeper":        "dir -rwxr-xr-x",
		"sub/deeper/b.bin":  "-rw------- bravo!",
		"sub/to-a":          "link ../a.txt",
		"sub/abs-to-a":      "link ../a.txt",
		"sub/deeper/to-sub": "link ..",
		"top":               "link .",
	}
	if diff := cmp.Diff(want, treeOf(t, dest)); diff != "" {
		t.Errorf("copy (-want +got):\n%s", diff)
	}
	if res.Files != 8 || res.Bytes != int64(2*len("alpha")+len("#!/bin/sh\n")+len("bravo!")) {
		t.Errorf("result %+v: want 8 files (4 files, 4 links), the hard link's bytes counted", res)
	}
	for _, name := range []string{"sub/shadow", "sub/up", "sibling-prefix", "pipe", "tty"} {
		if !strings.Contains(strings.Join(res.Warnings, "\n"), art+"/"+name) {
			t.Errorf("no warning names %s: %q", name, res.Warnings)
		}
	}
}

// Every lie a guest can tell in its archive is refused, naming the entry,
// and nothing lands outside the destination.
func TestCollectTarRefusesALyingArchive(t *testing.T) {
	huge := tarEntry{hdr: tar.Header{Name: "./big-header", Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"comment": strings.Repeat("h", artifacts.MaxHeader)}}}
	tests := []struct {
		name    string
		entries []tarEntry
		entry   string // named in the error
		raw     []byte // instead of entries
	}{
		{"dot-dot", []tarEntry{fileE("../escape", "x")}, "../escape", nil},
		{"dot-dot inside", []tarEntry{dirE("./a/"), fileE("./a/../../escape", "x")}, "./a/../../escape", nil},
		{"absolute name", []tarEntry{fileE("/tmp/escape", "x")}, "/tmp/escape", nil},
		{"empty component", []tarEntry{fileE("./a//b", "x")}, "./a//b", nil},
		{"link then a file through it", []tarEntry{linkE("./l", "/tmp"), fileE("./l/escape", "x")}, "./l/escape", nil},
		{"inside link then a file through it", []tarEntry{dirE("./d/"), linkE("./l", "d"), fileE("./l/x", "x")}, "./l/x", nil},
		{"file then a file below it", []tarEntry{fileE("./f", "x"), fileE("./f/x", "y")}, "./f/x", nil},
		{"duplicate file", []tarEntry{fileE("./a", "x"), fileE("./a", "y")}, "./a", nil},
		{"directory then a link of the same name", []tarEntry{dirE("./d/"), linkE("./d", "/tmp"), fileE("./d/x", "x")}, "./d", nil},
		{"duplicate top", []tarEntry{dirE("./"), dirE("./")}, "./", nil},
		{"top that is a file", []tarEntry{fileE(".", "x")}, ".", nil},
		{"hard link out", []tarEntry{{hdr: tar.Header{Name: "./h", Typeflag: tar.TypeLink, Linkname: "/etc/shadow"}}}, "./h", nil},
		{"hard link to a link", []tarEntry{linkE("./l", "/etc/shadow"), {hdr: tar.Header{Name: "./h", Typeflag: tar.TypeLink, Linkname: "./l"}}}, "./h", nil},
		{"huge header", []tarEntry{huge}, "(next header)", nil},
		{"symlink with content", nil, "./l", retype(t, tarOf(t, fileE("./l", "0123456789")), tar.TypeSymlink)},
		{"FIFO with content", nil, "./l", retype(t, tarOf(t, fileE("./l", "0123456789")), tar.TypeFifo)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			dest := filepath.Join(tmp, "job", "artifacts")
			archive := tt.raw
			if archive == nil {
				archive = tarOf(t, tt.entries...)
			}
			_, err := artifacts.CollectTar(t.Context(), stream(archive), art, dest, limits())
			if !errors.Is(err, artifacts.ErrRefused) || !strings.Contains(err.Error(), shared.Show(tt.entry)) {
				t.Fatalf("error %v, want a refusal naming %q", err, tt.entry)
			}
			// Nothing beside the destination, nothing written through a link.
			for _, p := range []string{filepath.Join(tmp, "escape"), filepath.Join(tmp, "job", "escape")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s written", p)
				}
			}
			if _, err := os.Lstat("/tmp/escape"); err == nil {
				t.Errorf("/tmp/escape written")
			}
		})
	}
}

// retype sets the type of the archive's first header, which no tar.Writer
// would write with content, and fixes its checksum.
func retype(t *testing.T, archive []byte, flag byte) []byte {
	t.Helper()
	b := bytes.Clone(archive)
	b[156] = flag
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// The byte cap counts what is written: a declared size over it is refused
// before a byte is read, and the files before it are kept.
func TestCollectTarByteCap(t *testing.T) {
	archive := tarOf(t, fileE("./a", "0123456789"), fileE("./b", "0123456789"), fileE("./c", "x"))
	dest := filepath.Join(t.TempDir(), "artifacts")
	res, err := artifacts.CollectTar(t.Context(), stream(archive), art, dest, artifacts.Limits{MaxBytes: 15, MaxFiles: 10})
	if !errors.Is(err, artifacts.ErrLimit) || !errors.Is(err, shared.ErrInvalidInput) ||
		!strings.Contains(err.Error(), "artifacts.max_bytes 15") || !strings.Contains(err.Error(), art+"/b") {
		t.Fatalf("error %v, want the byte cap naming the limit and the file", err)
	}
	if res.Files != 1 || res.Bytes != 10 {
		t.Errorf("result %+v, want the first file counted", res)
	}
	if diff := cmp.Diff(map[string]string{".": "dir -rwxr-xr-x", "a": "-rw-r--r-- 0123456789"}, treeOf(t, dest)); diff != "" {
		t.Errorf("copy (-want +got):\n%s", diff)
	}
	// A hard link counts its file's size again.
	archive = tarOf(t, fileE("./a", "0123456789"), tarEntry{hdr: tar.Header{Name: "./h", Typeflag: tar.TypeLink, Linkname: "./a"}})
	_, err = artifacts.CollectTar(t.Context(), stream(archive), art, t.TempDir(), artifacts.Limits{MaxBytes: 15, MaxFiles: 10})
	if !errors.Is(err, artifacts.ErrLimit) || !strings.Contains(err.Error(), art+"/h") {
		t.Errorf("hard link over the cap: %v", err)
	}
}

// Every entry counts, skipped ones too: a stream of empty directories or
// FIFOs stops at max_files.
func TestCollectTarMaxFiles(t *testing.T) {
	var entries []tarEntry
	for i := range 11 {
		entries = append(entries, tarEntry{hdr: tar.Header{Name: "./p" + string(rune('a'+i)), Typeflag: tar.TypeFifo}})
	}
	_, err := artifacts.CollectTar(t.Context(), stream(tarOf(t, entries...)), art, t.TempDir(), artifacts.Limits{MaxBytes: 1 << 20, MaxFiles: 10})
	if !errors.Is(err, artifacts.ErrLimit) || !errors.Is(err, shared.ErrInvalidInput) ||
		!strings.Contains(err.Error(), "artifacts.max_files 10") || !strings.Contains(err.Error(), art+"/pk") {
		t.Fatalf("error %v, want the entry cap naming the limit and the 11th entry", err)
	}
	if _, err := artifacts.CollectTar(t.Context(), stream(tarOf(t, entries[:10]...)), art, t.TempDir(), artifacts.Limits{MaxBytes: 1 << 20, MaxFiles: 10}); err != nil {
		t.Errorf("10 entries under max_files 10: %v", err)
	}
}

// stalling is a stream that sends its bytes, then never ends until closed.
type stalling struct {
	r      io.Reader
	closed chan struct{}
}

func newStalling(b []byte) *stalling {
	return &stalling{r: bytes.NewReader(b), closed: make(chan struct{})}
}

func (s *stalling) Read(p []byte) (int, error) {
	if n, _ := s.r.Read(p); n > 0 {
		return n, nil
	}
	<-s.closed
	return 0, errors.New("read on closed stream")
}

func (s *stalling) Close() error {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	return nil
}

// A stream that stops mid-archive and never ends is bounded by
// artifacts.timeout_secs, and the error names it.
func TestCollectTarStreamThatNeverEnds(t *testing.T) {
	archive := tarOf(t, fileE("./a", "alpha"))
	archive = archive[:len(archive)-1024] // the end-of-archive blocks never come
	ctx, cancel := artifacts.WithTimeout(t.Context(), 1)
	defer cancel()
	start := time.Now()
	res, err := artifacts.CollectTar(ctx, newStalling(archive), art, t.TempDir(), limits())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "artifacts.timeout_secs 1") {
		t.Fatalf("error %v, want the collection's time limit named", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if res.Files != 1 {
		t.Errorf("result %+v: want the file read before the stall", res)
	}
}

// What follows the archive's end is not read: a guest that keeps writing
// after it does not hold the collection.
func TestCollectTarStopsAtTheArchiveEnd(t *testing.T) {
	res, err := artifacts.CollectTar(t.Context(), newStalling(tarOf(t, fileE("./a", "alpha"))), art, t.TempDir(), limits())
	if err != nil || res.Files != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
}

// A file whose header declares more than the cap is refused before its
// content is read (the stream holds none of it).
func TestCollectTarDeclaredSizeOverTheCap(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "./huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40}); err != nil {
		t.Fatal(err)
	}
	_, err := artifacts.CollectTar(t.Context(), newStalling(buf.Bytes()), art, t.TempDir(), limits())
	if !errors.Is(err, artifacts.ErrLimit) || !strings.Contains(err.Error(), art+"/huge") {
		t.Fatalf("error %v, want the byte cap", err)
	}
}

// A name of thousands of levels would make as many directories, each one
// walked again from the root: it is refused before any is made, and the
// directories a name implies count against max_files.
func TestCollectTarRefusesADeepNameAndCountsImpliedDirectories(t *testing.T) {
	deep := "./" + strings.Repeat("a/", 2000) + "f"
	dest := t.TempDir()
	_, err := artifacts.CollectTar(t.Context(), stream(tarOf(t, dirE("./"), fileE(deep, "x"))), art, dest, limits())
	if !errors.Is(err, artifacts.ErrRefused) || !strings.Contains(err.Error(), "2001 levels, over 4096 bytes or 256 levels") {
		t.Fatalf("error %v, want the deep name refused", err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a directory of the deep name was made: %v", err)
	}
	if len(err.Error()) > 2048 {
		t.Errorf("the error is %d bytes long; want the name cut", len(err.Error()))
	}

	// 256 levels pass, 257 do not, with or without "./".
	for name, ok := range map[string]bool{
		"./" + strings.Repeat("d/", 255) + "f": true, strings.Repeat("d/", 255) + "f": true,
		"./" + strings.Repeat("d/", 256) + "f": false, strings.Repeat("d/", 256) + "f": false,
	} {
		_, err := artifacts.CollectTar(t.Context(), stream(tarOf(t, dirE("./"), fileE(name, "x"))), art, t.TempDir(), limits())
		if ok != (err == nil) {
			t.Errorf("a name of %d levels: %v", strings.Count(name, "/")+1, err)
		}
	}

	lim := limits()
	lim.MaxFiles = 3
	_, err = artifacts.CollectTar(t.Context(), stream(tarOf(t, dirE("./"), fileE("./a/b/c/d/f", "x"))), art, t.TempDir(), lim)
	if err == nil || !strings.Contains(err.Error(), "artifacts.max_files") {
		t.Errorf("one file below four implied directories, max_files 3: %v; want the entry cap", err)
	}
}

// An archive that stops right after an entry, without its end-of-archive
// blocks, was cut short (a tar killed between two records): an error, not
// a collection of what came.
func TestCollectTarRefusesAnArchiveCutAtAnEntry(t *testing.T) {
	whole := tarOf(t, dirE("./"), fileE("./a", "alpha"), fileE("./b", "bravo"))
	cut := whole[:len(whole)-1024] // Go's writer ends with two zero blocks
	_, err := artifacts.CollectTar(t.Context(), stream(cut), art, t.TempDir(), limits())
	if err == nil || !strings.Contains(err.Error(), "ends without its end-of-archive blocks") {
		t.Fatalf("error %v, want the cut archive named", err)
	}
	res, err := artifacts.CollectTar(t.Context(), stream(whole), art, t.TempDir(), limits())
	if err != nil || res.Files != 2 {
		t.Errorf("the whole archive: %+v, %v", res, err)
	}
}

// cancelAt reads r and cancels once at bytes were read.
type cancelAt struct {
	r      io.Reader
	at     int
	read   int
	cancel context.CancelFunc
}

func (c *cancelAt) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	if c.read >= c.at {
		c.cancel()
	}
	return n, err
}

func (c *cancelAt) Close() error { return nil }

// A sparse entry's holes are read without touching the stream: the end of
// the collection's context stops them too, not only the stream's close.
func TestCollectTarStopsASparseEntryAtTheDeadline(t *testing.T) {
	const realSize = 256 << 20
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "./s") + paxRecord("GNU.sparse.realsize", fmt.Sprint(realSize))
	var a []byte
	a = append(a, tarOf(t, dirE("./"))...)
	a = a[:len(a)-1024]
	a = append(a, rawHeader("./PaxHeaders/s", 'x', len(recs))...)
	a = append(a, padBlock([]byte(recs))...)
	a = append(a, rawHeader("./GNUSparseFile.0/s", '0', 512)...)
	a = append(a, padBlock([]byte("0\n"))...) // the map: no data, all hole
	headerEnd := len(a)
	a = append(a, make([]byte, 1024)...)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dest := t.TempDir()
	lim := artifacts.Limits{MaxBytes: 1 << 40, MaxFiles: 10}
	_, err := artifacts.CollectTar(ctx, &cancelAt{r: bytes.NewReader(a), at: headerEnd, cancel: cancel}, art, dest, lim)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want the cancellation", err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "s")); err == nil && fi.Size() > 1<<20 {
		t.Errorf("%d bytes of holes written after the context ended", fi.Size())
	}
}

// rawHeader is a ustar header block.
func rawHeader(name string, flag byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], "00000000000\x00")
	b[156] = flag
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecord is one PAX record: its length counts its own digits.
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	n := len(s) + 1
	for len(fmt.Sprint(n))+len(s) != n {
		n++
	}
	return fmt.Sprint(n) + s
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// The guest names what a warning says (a link's target may be 200 KiB of
// control characters): each warning is cut, and their number bounded.
func TestCollectTarBoundsItsWarnings(t *testing.T) {
	entries := []tarEntry{dirE("./")}
	for i := range artifacts.MaxWarnings + 50 {
		entries = append(entries, linkE(fmt.Sprintf("./l%04d", i), "/"+strings.Repeat("\x01", 2000)))
	}
	lim := limits()
	lim.MaxFiles = 0
	res, err := artifacts.CollectTar(t.Context(), stream(tarOf(t, entries...)), art, t.TempDir(), lim)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != artifacts.MaxWarnings+1 || !strings.Contains(res.Warnings[artifacts.MaxWarnings], "50 more warnings past the first 1000 are left out") {
		t.Fatalf("%d warnings, the last %q; want %d and a line saying the rest are left out", len(res.Warnings), res.Warnings[len(res.Warnings)-1], artifacts.MaxWarnings+1)
	}
	for _, w := range res.Warnings {
		if len(w) > artifacts.MaxWarning+len("…") {
			t.Fatalf("a warning of %d bytes: %.80q…", len(w), w)
		}
	}
}
