package cases

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/testharness/remotefs"
)

// The virtual remote host's filesystem is one Populate and FSRemote take.
var (
	_ FS        = (*remotefs.FS)(nil)
	_ ResolveFS = (*remotefs.FS)(nil)
)

// recordingFS records what Populate asks of it, failing at failAt.
type recordingFS struct {
	calls  []string
	failAt string
}

func (r *recordingFS) do(call string) error {
	r.calls = append(r.calls, call)
	if call == r.failAt {
		return errors.New("injected")
	}
	return nil
}

func (r *recordingFS) Symlink(target, l string) error { return r.do("symlink " + l + " -> " + target) }
func (r *recordingFS) MkdirAll(p string) error        { return r.do("mkdir " + p) }
func (r *recordingFS) WriteFile(p string, d []byte) error {
	return r.do("write " + p + " " + string(d))
}

// TestPopulateLaysOutAnyFS: Populate takes any filesystem behind the FS
// interface, not only the virtual remote's: symlinks first (sorted), then
// directories (in the case's order), then files (sorted), so that a file
// may live under a symlinked directory; the first error stops it, naming
// the case and the path.
func TestPopulateLaysOutAnyFS(t *testing.T) {
	c := &Case{
		Name:           "c",
		RemoteSymlinks: map[string]string{"/w/b": "/x", "/w/a": "/y"},
		RemoteDirs:     []string{"/z", "/x"},
		RemoteFiles:    map[string][]byte{"/w/b/f": []byte("2"), "/w/a/f": []byte("1")},
	}
	r := &recordingFS{}
	if err := c.Populate(r); err != nil {
		t.Fatal(err)
	}
	want := []string{"symlink /w/a -> /y", "symlink /w/b -> /x", "mkdir /z", "mkdir /x", "write /w/a/f 1", "write /w/b/f 2"}
	if d := cmp.Diff(want, r.calls); d != "" {
		t.Errorf("calls (-want +got):\n%s", d)
	}
	r = &recordingFS{failAt: "mkdir /z"}
	err := c.Populate(r)
	if err == nil || err.Error() != "case c: remote dir /z: injected" || len(r.calls) != 3 {
		t.Errorf("Populate = %v after calls %q; want it to stop at mkdir /z, naming it", err, r.calls)
	}
}
