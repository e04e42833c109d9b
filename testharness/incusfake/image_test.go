package incusfake

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// An instance made from an image with a tree starts with it: the users of
// /etc/passwd, a home owned by uid 1000 in which that user's files are its
// own, chmod and chown over the guest's own tree, and the owners the file
// API reports.
func TestImageTreeOwnersChmodChown(t *testing.T) {
	f := newFixture(t)
	if f.s.SetImageTree("default", "no-such-alias", nil) {
		t.Error("SetImageTree of a missing image reported true")
	}
	if !f.s.SetImageTree("default", "bb", BusyboxLikeTree()) {
		t.Fatal("SetImageTree of bb reported false")
	}
	out := filepath.Join(f.dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	f.running("c1", shared.Devices{"out": {"type": "disk", "source": out, "path": "/out", "readonly": "true"}})

	stdout, stderr, op := f.exec("c1", map[string]any{"command": []string{"sh", "-c",
		"pwd; id -u; printf x > mine; mkdir d; ln -s mine l"}, "user": 1000, "group": 1000, "cwd": "/home/ci"})
	if stdout != "/home/ci\n1000\n" || op.Metadata["return"] != float64(0) {
		t.Fatalf("as uid 1000: stdout %q stderr %q return %v", stdout, stderr, op.Metadata["return"])
	}
	stdout, stderr, op = f.exec("c1", map[string]any{"command": []string{"sh", "-c",
		"printf r > /root-file; chmod 4640 /root-file; chown ci:ci /root-file; chmod u+x,o=r /home/ci/mine; " +
			"chown 0 /out; echo ro=$?; chmod 700 /out; echo ro=$?; chown nobody /root-file; echo unknown=$?"}})
	if stdout != "ro=1\nro=1\nunknown=1\n" || op.Metadata["return"] != float64(0) {
		t.Errorf("as root: stdout %q stderr %q", stdout, stderr)
	}
	for _, want := range []string{"chown: /out: Read-only file system", "chmod: /out: Read-only file system", "chown: unknown user nobody"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	tests := []struct {
		path, typ, mode, uid string
	}{
		{"/home/ci", "directory", "0755", "1000"},
		{"/home/ci/mine", "file", "0744", "1000"},
		{"/home/ci/d", "directory", "0755", "1000"},
		{"/home/ci/l", "symlink", "0777", "1000"},
		{"/root-file", "file", "0640", "1000"}, // set-uid not shown
		{"/etc/passwd", "file", "0644", "0"},
	}
	for _, tt := range tests {
		r := f.get("/1.0/instances/c1/files?path="+tt.path, nil)
		h := r.header
		if r.code != http.StatusOK || h.Get("X-Incus-Type") != tt.typ || h.Get("X-Incus-Mode") != tt.mode ||
			h.Get("X-Incus-Uid") != tt.uid || h.Get("X-Incus-Gid") != tt.uid || h.Get("X-Lxd-Uid") != tt.uid {
			t.Errorf("%s: %d type %q mode %q uid %q gid %q; want %s %s owned by %s", tt.path, r.code,
				h.Get("X-Incus-Type"), h.Get("X-Incus-Mode"), h.Get("X-Incus-Uid"), h.Get("X-Incus-Gid"), tt.typ, tt.mode, tt.uid)
		}
	}
	fi, err := f.s.Guest("default", "c1").Stat("/root-file")
	if err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("set-uid bit lost: %v %v", fi, err)
	}
}

func TestFilePushOwner(t *testing.T) {
	f := newFixture(t)
	f.running("c1", nil)
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+"/1.0/instances/c1/files?path=/tmp/s.sh", strings.NewReader("echo hi\n"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Incus-Uid", "1000")
	req.Header.Set("X-Incus-Gid", "1001")
	req.Header.Set("X-Incus-Mode", "0755")
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	r := f.get("/1.0/instances/c1/files?path=/tmp/s.sh", nil)
	if r.header.Get("X-Incus-Uid") != "1000" || r.header.Get("X-Incus-Gid") != "1001" || r.header.Get("X-Incus-Mode") != "0755" {
		t.Errorf("pushed file: uid %q gid %q mode %q, want 1000 1001 0755",
			r.header.Get("X-Incus-Uid"), r.header.Get("X-Incus-Gid"), r.header.Get("X-Incus-Mode"))
	}
}
