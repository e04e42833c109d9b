package incusfake

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

type fileReply struct {
	code   int
	header http.Header
	body   []byte
}

func (f *fixture) get(path string, header map[string]string) fileReply {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.ts.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return fileReply{resp.StatusCode, resp.Header, body}
}

func TestFilesAPI(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(f.dir, "out")
	writeHostFile(t, filepath.Join(out, "dist", "a.txt"), "artifact-content\n")
	if err := os.Symlink("/etc", filepath.Join(out, "etc-link")); err != nil {
		t.Fatal(err)
	}
	f.running("c1", shared.Devices{"out": {"type": "disk", "source": out, "path": "/ci"}})
	g := f.s.Guest("default", "c1")
	for _, step := range []error{
		g.WriteFile("/etc/shadow", []byte("root:SECRET-GUEST:\n"), 0o640),
		g.Symlink("/etc/shadow", "/ci/shadow-link"),
		g.Symlink("../../../../../../etc/shadow", "/ci/dist/rel-shadow"),
		g.Mkfifo("/ci/fifo", 0o644),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}

	t.Run("file", func(t *testing.T) {
		f.t = t
		r := f.get("/1.0/instances/c1/files?path=/ci/dist/a.txt", nil)
		want := map[string]string{
			"Content-Type": "application/octet-stream", "Content-Length": "17",
			"X-Incus-Type": "file", "X-Incus-Mode": "0644", "X-Incus-Uid": "0", "X-Incus-Gid": "0",
			"X-Lxd-Type": "file", "X-Lxd-Mode": "0644",
		}
		for k, v := range want {
			if got := r.header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
		if r.code != 200 || string(r.body) != "artifact-content\n" || r.header.Get("X-Incus-Modified") == "" {
			t.Errorf("%d %q %v", r.code, r.body, r.header)
		}
		ranged := f.get("/1.0/instances/c1/files?path=/ci/dist/a.txt", map[string]string{"Range": "bytes=0-7"})
		if ranged.code != http.StatusPartialContent || string(ranged.body) != "artifact" {
			t.Errorf("range: %d %q", ranged.code, ranged.body)
		}
	})
	t.Run("guest file through a host symlink stays in the guest", func(t *testing.T) {
		f.t = t
		r := f.get("/1.0/instances/c1/files?path=/ci/etc-link/shadow", nil)
		if r.code != 200 || string(r.body) != "root:SECRET-GUEST:\n" || r.header.Get("X-Incus-Mode") != "0640" {
			t.Errorf("%d %q mode %s", r.code, r.body, r.header.Get("X-Incus-Mode"))
		}
	})
	t.Run("directory", func(t *testing.T) {
		f.t = t
		r := f.get("/1.0/instances/c1/files?path=/ci", nil)
		var e envelope
		if err := json.Unmarshal(r.body, &e); err != nil {
			t.Fatal(err)
		}
		var names []string
		if err := json.Unmarshal(e.Metadata, &names); err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		if diff := cmp.Diff([]string{"dist", "etc-link", "fifo", "shadow-link"}, names); diff != "" {
			t.Errorf("names (-want +got):\n%s", diff)
		}
		if r.header.Get("X-Incus-Type") != "directory" || e.Type != "sync" {
			t.Errorf("type %q, envelope %q", r.header.Get("X-Incus-Type"), e.Type)
		}
	})
	t.Run("symlinks are reported, never followed", func(t *testing.T) {
		f.t = t
		for p, target := range map[string]string{
			"/ci/shadow-link":     "/etc/shadow",
			"/ci/dist/rel-shadow": "/etc/shadow",
			"/ci/etc-link":        "/etc",
		} {
			r := f.get("/1.0/instances/c1/files?path="+p, nil)
			if r.code != 200 || string(r.body) != target || r.header.Get("X-Incus-Type") != "symlink" || r.header.Get("X-Incus-Mode") != "0777" {
				t.Errorf("%s: %d %q type %q mode %q, want the target %q", p, r.code, r.body, r.header.Get("X-Incus-Type"), r.header.Get("X-Incus-Mode"), target)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		f.t = t
		f.wantError(f.do(http.MethodGet, "/1.0/instances/c1/files?path=/ci/missing", nil), 404, "Not Found")
		f.wantError(f.do(http.MethodGet, "/1.0/instances/c1/files?path=/missing/a", nil), 404, "Not Found")
		f.wantError(f.do(http.MethodGet, "/1.0/instances/c1/files", nil), 400, "Missing path argument")
		f.wantError(f.do(http.MethodGet, "/1.0/instances/nope/files?path=/", nil), 404, "Instance not found")
	})
	t.Run("fifo never answers", func(t *testing.T) {
		f.t = t
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.ts.URL+"/1.0/instances/c1/files?path=/ci/fifo", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := f.ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a FIFO answered %d", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want the client's deadline", err)
		}
	})
}

func TestFilesOnStoppedInstance(t *testing.T) {
	f := newFixture(t)
	f.wantOp(f.create("default", map[string]any{"name": "c1", "source": map[string]any{"type": "image", "alias": "bb"}}), "Success", "")
	r := f.get("/1.0/instances/c1/files?path=/etc/hostname", nil)
	if r.code != 200 || string(r.body) != "c1\n" {
		t.Errorf("%d %q", r.code, r.body)
	}
}

func TestFilesPushAndDelete(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	push := func(p, contentType string, hdr map[string]string, body string) envelope {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, f.ts.URL+"/1.0/instances/c1/files?path="+p, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := f.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e envelope
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		e.Code = resp.StatusCode
		return e
	}
	const bin = "application/octet-stream"
	for _, step := range []struct {
		path, ctype string
		hdr         map[string]string
		body        string
		code        int
	}{
		{"/home/ci", bin, map[string]string{"X-Incus-Type": "directory"}, "", 200},
		{"/home/ci/run.sh", bin, map[string]string{"X-Incus-Mode": "0755"}, "echo hi\n", 200},
		{"/home/ci/run.sh", bin, map[string]string{"X-Incus-Write": "append"}, "echo more\n", 200},
		{"/home/ci/link", bin, map[string]string{"X-Incus-Type": "symlink"}, "run.sh", 200},
		{"/home/ci/form", "application/x-www-form-urlencoded", nil, "swallowed", 200},
		{"/nope/file", bin, nil, "x", 404},
	} {
		if e := push(step.path, step.ctype, step.hdr, step.body); e.Code != step.code {
			t.Errorf("push %s: %d %q, want %d", step.path, e.Code, e.Error, step.code)
		}
	}
	g := f.s.Guest("default", "c1")
	if data, err := g.ReadFile("/home/ci/run.sh"); err != nil || string(data) != "echo hi\necho more\n" {
		t.Errorf("run.sh: %q %v", data, err)
	}
	if fi, err := g.Stat("/home/ci/run.sh"); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode: %v %v", fi, err)
	}
	if target, err := g.Readlink("/home/ci/link"); err != nil || target != "run.sh" {
		t.Errorf("link: %q %v", target, err)
	}
	if data, err := g.ReadFile("/home/ci/form"); err != nil || len(data) != 0 {
		t.Errorf("a form-urlencoded body must be swallowed: %q %v", data, err)
	}
	f.wantError(f.do(http.MethodDelete, "/1.0/instances/c1/files?path=/home/ci", nil), 500, `sftp: "remove /home/ci: directory not empty" (SSH_FX_FAILURE)`)
	if e := f.do(http.MethodDelete, "/1.0/instances/c1/files?path=/home/ci/link", nil); e.Code != 200 {
		t.Errorf("DELETE link: %d %q", e.Code, e.Error)
	}
	f.wantError(f.do(http.MethodDelete, "/1.0/instances/c1/files?path=/home/ci/link", nil), 404, "Not Found")
}
