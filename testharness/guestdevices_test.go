package testharness

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/vfs/vfstest"
)

// A guest's disk devices are backed by the virtual remote's private
// filesystem: reads come from it, writes land in it, read-only devices
// refuse writes, and a link in it resolves inside the guest.
func TestGuestDevicesOnRemoteFS(t *testing.T) {
	fsys, err := remotefs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		fsys.WriteFile("/srv/src/in.txt", []byte("input\n")),
		fsys.MkdirAll("/srv/out"),
		fsys.Symlink("/etc", "/srv/src/etc"),
		fsys.WriteFile("/etc/hostname", []byte("remote-host\n")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	inc := incusfake.New(incusfake.Options{SourceExists: fsys.Exists})
	inc.SetHostFS(fsys)
	inc.AddImage("default", "bb", "", nil)
	ts := httptest.NewServer(inc)
	t.Cleanup(func() {
		inc.Shutdown()
		ts.Close()
	})
	var do func(method, path string, body any) map[string]any
	do = func(method, path string, body any) map[string]any {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, ts.URL+path, bytes.NewReader(data))
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
			t.Fatal(err)
		}
		if op, ok := env["operation"].(string); ok && op != "" {
			return do(http.MethodGet, op+"/wait?timeout=30", nil)
		}
		return env
	}
	wantOK := func(env map[string]any) map[string]any {
		t.Helper()
		meta, _ := env["metadata"].(map[string]any)
		if env["error"] != "" || meta["err"] != "" && meta["err"] != nil {
			t.Fatalf("%v", env)
		}
		return meta
	}
	wantOK(do(http.MethodPost, "/1.0/instances", map[string]any{
		"name": "c1", "source": map[string]any{"type": "image", "alias": "bb"}, "start": true,
		"devices": map[string]any{
			"src": map[string]string{"type": "disk", "source": "/srv/src", "path": "/src", "readonly": "true"},
			"out": map[string]string{"type": "disk", "source": "/srv/out", "path": "/out"},
		},
	}))
	meta := wantOK(do(http.MethodPost, "/1.0/instances/c1/exec", map[string]any{"command": []string{"sh", "-c",
		"cat /src/in.txt > /out/copy && ln -s ../src/in.txt /out/link && ! echo x > /src/new && test \"$(cat /src/etc/hostname)\" = c1"}}))
	if meta["metadata"].(map[string]any)["return"] != float64(0) {
		t.Fatalf("exec: %v", meta)
	}
	if got, err := fsys.ReadFile("/srv/out/copy"); err != nil || string(got) != "input\n" {
		t.Errorf("copy on the remote: %q %v", got, err)
	}
	if got, err := fsys.Readlink("/srv/out/link"); err != nil || got != "../src/in.txt" {
		t.Errorf("link on the remote: %q %v", got, err)
	}
	if fsys.Exists("/srv/src/new") {
		t.Error("a read-only device was written")
	}
	// A guest's read-write device on the remote resolves paths and links
	// as the one model does, every link inside the guest.
	t.Run("one model", func(t *testing.T) {
		vfstest.Run(t, inc.Guest("default", "c1"), "/out")
	})
}
