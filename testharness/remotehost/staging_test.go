package remotehost

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"

	"github.com/pikaci/vmexec/testharness/remotefs"
)

type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func archive(tb testing.TB, entries ...tarEntry) []byte {
	tb.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func runStdin(tb testing.TB, c *ssh.Client, cmd string, stdin []byte) result {
	tb.Helper()
	s, err := c.NewSession()
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, bytes.NewReader(stdin)
	err = s.Run(cmd)
	status := 0
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errorsAs(err, &ee):
		status = ee.ExitStatus()
	default:
		tb.Fatalf("run %q: %v", cmd, err)
	}
	return result{out.String(), errb.String(), status}
}

func errorsAs(err error, ee **ssh.ExitError) bool {
	e, ok := err.(*ssh.ExitError)
	*ee = e
	return ok
}

// modes lists type and permission bits of everything under p.
func modes(tb testing.TB, fsys *remotefs.FS, p string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	var walk func(string)
	walk = func(dir string) {
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range ents {
			q := dir + "/" + e.Name()
			fi, err := fsys.Lstat(q)
			if err != nil {
				tb.Fatal(err)
			}
			rel := strings.TrimPrefix(q, p+"/")
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				t, _ := fsys.Readlink(q)
				out[rel] = "link " + t
			case fi.IsDir():
				out[rel] = fi.Mode().String()
				walk(q)
			default:
				b, _ := fsys.ReadFile(q)
				out[rel] = fi.Mode().String() + " " + string(b)
			}
		}
	}
	walk(p)
	return out
}

func TestTarExtract(t *testing.T) {
	fsys := caseFS(t)
	h := startHost(t, fsys, Options{})
	c := clientFromFiles(t, h)
	a := archive(t,
		tarEntry{name: `dir "q"/`, typ: tar.TypeDir, mode: 0o750},
		tarEntry{name: `dir "q"/it's.sh`, typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"},
		tarEntry{name: "a file", typ: tar.TypeReg, mode: 0o640, body: "alpha"},
		tarEntry{name: "link", typ: tar.TypeSymlink, link: `dir "q"/it's.sh`},
	)
	r := runStdin(t, c, "mkdir -- '/t x' && exec tar -x --no-same-owner --preserve-permissions -f - -C '/t x'", a)
	if r.Status != 0 {
		t.Fatalf("tar: %+v", r)
	}
	want := map[string]string{
		`dir "q"`:         "drwxr-x---",
		`dir "q"/it's.sh`: "-rwxr-xr-x #!/bin/sh\n", // set-uid dropped
		"a file":          "-rw-r----- alpha",
		"link":            `link dir "q"/it's.sh`,
	}
	if diff := cmp.Diff(want, modes(t, fsys, "/t x")); diff != "" {
		t.Errorf("extracted (-want +got):\n%s", diff)
	}

	// Publish and discard.
	if r := run(t, c, "mv -T -- '/t x' /published"); r.Status != 0 {
		t.Fatalf("mv -T: %+v", r)
	}
	if err := fsys.MkdirAll("/other/full"); err != nil {
		t.Fatal(err)
	}
	if r := run(t, c, "mv -T -- /published /other"); r.Status == 0 || !strings.Contains(r.Stderr, "not empty") {
		t.Errorf("mv -T onto a non-empty dir: %+v, want a failure", r)
	}
	if r := run(t, c, "rm -rf -- /published /missing"); r.Status != 0 || fsys.Exists("/published") {
		t.Errorf("rm -rf: %+v", r)
	}
	if !fsys.Exists("/etc") || !fsys.Exists("/other/full") {
		t.Error("rm -rf removed more than it was given")
	}
}

func TestTarRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"absolute", []tarEntry{{name: "/etc/evil", typ: tar.TypeReg, body: "x"}}, "absolute"},
		{"dotdot", []tarEntry{{name: "a/../../evil", typ: tar.TypeReg, body: "x"}}, `".."`},
		{"through a link", []tarEntry{{name: "l", typ: tar.TypeSymlink, link: "/etc"}, {name: "l/evil", typ: tar.TypeReg, body: "x"}}, "not a directory"},
		{"hard link", []tarEntry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, "refused"},
		{"fifo", []tarEntry{{name: "p", typ: tar.TypeFifo}}, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := caseFS(t)
			h := startHost(t, fsys, Options{})
			c := clientFromFiles(t, h)
			r := runStdin(t, c, "mkdir /t && exec tar -x -f - -C /t", archive(t, tc.entries...))
			if r.Status == 0 || !strings.Contains(r.Stderr, tc.want) {
				t.Errorf("tar: %+v, want a failure saying %q", r, tc.want)
			}
			if fsys.Exists("/etc/evil") || fsys.Exists("/evil") || fsys.Exists("/h") {
				t.Error("an entry was written outside the target dir")
			}
		})
	}
}

func TestStagingCommandsOnlyTheirForms(t *testing.T) {
	h := startHost(t, caseFS(t), Options{})
	c := clientFromFiles(t, h)
	for _, cmd := range []string{"tar -cf - /etc", "tar -xf /etc/x -C /a", "mv /a /b", "rm /a"} {
		if r := run(t, c, cmd); r.Status == 0 {
			t.Errorf("%s: succeeded, want it refused", cmd)
		}
	}
}
