package stage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/plugin/internal/stage"
	"github.com/pikaci/vmexec/shared"
)

// tree makes a snapshot with awkward names, a symlink, an executable and a
// set-uid file, and returns its root.
func tree(tb testing.TB) string {
	tb.Helper()
	root := filepath.Join(tb.TempDir(), "snap shot")
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, `dir with "quotes"`, "it's deep"), 0o755))
	must(os.WriteFile(filepath.Join(root, "pikaci-snapshot.json"), []byte(`{"content_hash":"abc"}`), 0o644))
	must(os.WriteFile(filepath.Join(root, `dir with "quotes"`, "it's deep", "a file.txt"), []byte("hello\n"), 0o640))
	must(os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "suid"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(root, "suid"), 0o755|os.ModeSetuid|os.ModeSetgid))
	must(os.Symlink("../outside/secret", filepath.Join(root, "link to outside")))
	return root
}

type entry struct {
	Name, Link string
	Type       byte
	Mode       int64
	Body       string
}

func readTar(tb testing.TB, b []byte) []entry {
	tb.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, entry{Name: h.Name, Link: h.Linkname, Type: h.Typeflag, Mode: h.Mode, Body: string(body)})
	}
}

func TestWriteTar(t *testing.T) {
	root := tree(t)
	var buf bytes.Buffer
	n, err := stage.WriteTar(t.Context(), &buf, root, "")
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTar reported %d bytes, wrote %d", n, buf.Len())
	}
	want := []entry{
		{Name: `dir with "quotes"/`, Type: tar.TypeDir, Mode: 0o755},
		{Name: `dir with "quotes"/it's deep/`, Type: tar.TypeDir, Mode: 0o755},
		{Name: `dir with "quotes"/it's deep/a file.txt`, Type: tar.TypeReg, Mode: 0o640, Body: "hello\n"},
		{Name: "link to outside", Type: tar.TypeSymlink, Mode: 0o777, Link: "../outside/secret"},
		{Name: "pikaci-snapshot.json", Type: tar.TypeReg, Mode: 0o644, Body: `{"content_hash":"abc"}`},
		{Name: "run.sh", Type: tar.TypeReg, Mode: 0o755, Body: "#!/bin/sh\necho hi\n"},
		{Name: "suid", Type: tar.TypeReg, Mode: 0o755, Body: "x"}, // set-uid and set-gid dropped
	}
	if diff := cmp.Diff(want, readTar(t, buf.Bytes())); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}

	// Deterministic: the same tree gives the same bytes.
	var again bytes.Buffer
	if _, err := stage.WriteTar(t.Context(), &again, root, ""); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of one unchanged tree differ")
	}
}

func TestWriteTarRefusesFIFO(t *testing.T) {
	root := tree(t)
	fifo := filepath.Join(root, `dir with "quotes"`, "a pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := stage.WriteTar(t.Context(), io.Discard, root, "")
	if !errors.Is(err, stage.ErrUnsupportedType) || !errors.Is(err, shared.ErrInvalidInput) {
		t.Fatalf("error %v, want ErrUnsupportedType of kind invalid input", err)
	}
	if !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "FIFO") {
		t.Errorf("error %q does not name the FIFO %s", err, fifo)
	}
}

func TestWriteTarRoot(t *testing.T) {
	dir := t.TempDir()
	real := tree(t)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, root string
		kind       error
	}{
		{"symlink root is not followed", link, shared.ErrInvalidInput},
		{"file root", file, shared.ErrInvalidInput},
		{"missing root", filepath.Join(dir, "nope"), shared.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := stage.WriteTar(t.Context(), io.Discard, tc.root, "")
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.root) {
				t.Errorf("error %v, want %v naming %s", err, tc.kind, tc.root)
			}
		})
	}
}

func TestWriteTarCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := stage.WriteTar(ctx, io.Discard, tree(t), ""); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

func TestParseMarker(t *testing.T) {
	for _, tc := range []struct {
		name, data, hash, err string
	}{
		{"hash", `{"content_hash":"abc","created":"2026","files":3}`, "abc", ""},
		{"no hash", `{"created":"2026"}`, "", ""},
		{"empty hash", `{"content_hash":""}`, "", ""},
		{"duplicate key", `{"content_hash":"a","content_hash":"b"}`, "", `key "content_hash" given twice`},
		{"not a string", `{"content_hash":12}`, "", "content_hash is a JSON number, not a string"},
		{"null", `{"content_hash":null}`, "", "content_hash is a JSON null, not a string"},
		{"object", `{"content_hash":{"secret":"` + strings.Repeat("x", 1000) + `"}}`, "", "content_hash is a JSON object, not a string"},
		{"other spelling is another field", `{"Content_Hash":"x"}`, "", ""},
		{"array", `["x"]`, "", "not a JSON object"},
		{"trailing", `{"content_hash":"a"} {}`, "", "data after"},
		{"bad utf8", "{\"content_hash\":\"\xff\"}", "", "UTF-8"},
		{"truncated", `{"content_hash":"a"`, "", "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := stage.ParseMarker([]byte(tc.data), "/snap/pikaci-snapshot.json")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "/snap/pikaci-snapshot.json") {
					t.Fatalf("error %v, want one containing %q and the file", err, tc.err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error echoes the marker: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.ContentHash != tc.hash {
				t.Errorf("hash %q, want %q", m.ContentHash, tc.hash)
			}
		})
	}
}
