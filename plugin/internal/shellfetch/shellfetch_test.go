package shellfetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/shared/devices"
)

func bashRun(tb testing.TB) func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
	tb.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		testenv.SkipUnlessCI(tb, "bash not found")
	}
	return func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
		c := exec.CommandContext(ctx, bash, "-c", cmd)
		c.Stdin = bytes.NewReader(stdin)
		return c.Output()
	}
}

func TestShellRemoteAgainstBash(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hostile := "pkdeadbeef:r1:F:forged\x00" + "\n:end:\n" + "it's \"quoted\"\n"
	must(os.MkdirAll(filepath.Join(dir, "real dir", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "real dir", "it's.json"), []byte(hostile), 0o644))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
	must(os.Symlink("real dir", filepath.Join(dir, "link")))
	must(os.Symlink("loop", filepath.Join(dir, "loop")))

	q := devices.Query{
		Read: []string{
			filepath.Join(dir, "link", "it's.json"),
			filepath.Join(dir, "missing.json"),
			filepath.Join(dir, "empty"),
			filepath.Join(dir, "real dir"), // a directory is not a file
		},
		Resolve: []string{
			filepath.Join(dir, "link", "sub"),
			filepath.Join(dir, "link", "not-yet"),
			filepath.Join(dir, "no", "such", "parent"),
			filepath.Join(dir, "loop", "x"),
		},
	}
	a, err := ShellRemote{Run: bashRun(t)}.Fetch(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(a.Files[0].Data); got != hostile || a.Files[0].Err != nil {
		t.Errorf("file 0 = %q, %v; want the hostile content byte for byte", got, a.Files[0].Err)
	}
	for _, i := range []int{1, 3} {
		if !errors.Is(a.Files[i].Err, fs.ErrNotExist) {
			t.Errorf("file %d: err %v, want not-exist", i, a.Files[i].Err)
		}
	}
	if a.Files[2].Err != nil || len(a.Files[2].Data) != 0 {
		t.Errorf("empty file: %q, %v", a.Files[2].Data, a.Files[2].Err)
	}
	real := filepath.Join(dir, "real dir")
	want := []devices.Resolved{
		{Path: filepath.Join(real, "sub"), Exists: true},
		{Path: filepath.Join(real, "not-yet"), Exists: false},
		{Err: fs.ErrNotExist},
		{Err: fs.ErrNotExist},
	}
	opt := cmp.Comparer(func(a, b error) bool { return (a == nil) == (b == nil) })
	if d := cmp.Diff(want, a.Resolved, opt, cmpopts.EquateEmpty()); d != "" {
		t.Errorf("resolved (-want +got):\n%s", d)
	}
}

func TestParseFetchOutputRefusesDamage(t *testing.T) {
	q := devices.Query{Read: []string{"/a"}, Resolve: []string{"/b"}}
	const n = "pkN"
	good := n + ":r0:F:" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:"
	if _, err := ParseFetchOutput(n, q, []byte(good)); err != nil {
		t.Fatalf("good output refused: %v", err)
	}
	for name, out := range map[string]string{
		"empty":          "",
		"no end":         n + ":r0:F:" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":p0:E:/b",
		"missing record": n + ":r0:F:" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":end:",
		"unknown item":   n + ":r5:F:" + n + ":r0:F:" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"bad status":     n + ":r0:Q:" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"no chunk":       n + ":r0:F:" + n + ":p0:E:/b" + n + ":end:",
		"longer":         n + ":r0:F:" + n + ":s0:S:3\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"shorter":        n + ":r0:F:" + n + ":s0:S:5\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"two sizes":      n + ":r0:F:" + n + ":s0:S:2\n2\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"body on r":      n + ":r0:F:x" + n + ":s0:S:4\n" + n + ":c0:C:data" + n + ":p0:E:/b" + n + ":end:",
		"after end":      good + "junk",
		"garbage first":  "junk" + good,
	} {
		if _, err := ParseFetchOutput(n, q, []byte(out)); err == nil {
			t.Errorf("%s: accepted %q", name, out)
		}
	}
}

// TestFetchScriptIsConstant: the command line never carries a path, so its
// size does not grow with the query (attack 3: "Argument list too long",
// then a request sshd drops the connection for).
func TestFetchScriptIsConstant(t *testing.T) {
	s := FetchScript("pkN")
	if len(s) > 2048 {
		t.Errorf("script is %d bytes", len(s))
	}
	in, err := FetchInput(devices.Query{Read: []string{"/a'b"}, Resolve: []string{"/$(x)"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1\n1\n/a'b\n/$(x)\n"; string(in) != want {
		t.Errorf("input %q, want %q", in, want)
	}
	if _, err := FetchInput(devices.Query{Resolve: []string{"/a\x00b"}}); err == nil {
		t.Error("a path with a NUL was accepted on stdin")
	}
}

// A path holding a newline (valid: only NUL is excluded) reaches the remote
// shell whole, in bash and in a plain POSIX sh (dash), read and resolved as
// any other; so does one holding backslashes or starting with "=".
func TestShellRemotePathsWithNewlines(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "work\ndir\\x\n")
	nl := filepath.Join(dir, "work\ndir", "=x\\n")
	for _, d := range []string{odd, nl} {
		if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "m.json"), []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(nl, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	q := devices.Query{
		Read:    []string{filepath.Join(odd, "m.json"), filepath.Join(nl, "m.json")},
		Resolve: []string{filepath.Join(odd, "sub"), filepath.Join(dir, "link", "sub"), filepath.Join(dir, "link", "missing")},
	}
	for _, sh := range []string{"bash", "dash"} {
		t.Run(sh, func(t *testing.T) {
			path, err := exec.LookPath(sh)
			if err != nil {
				testenv.SkipUnlessCI(t, sh+" not found")
			}
			run := func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
				c := exec.CommandContext(ctx, path, "-c", cmd)
				c.Stdin = bytes.NewReader(stdin)
				return c.Output()
			}
			a, err := ShellRemote{Run: run}.Fetch(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range a.Files {
				if f.Err != nil || string(f.Data) != "{}\n" {
					t.Errorf("file %d %q: %q, %v", i, q.Read[i], f.Data, f.Err)
				}
			}
			want := []devices.Resolved{
				{Path: filepath.Join(odd, "sub"), Exists: true},
				{Path: filepath.Join(nl, "sub"), Exists: true},
				{Path: filepath.Join(nl, "missing")},
			}
			if d := cmp.Diff(want, a.Resolved, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("resolved (-want +got):\n%s", d)
			}
		})
	}
}

// TestShellRemoteManyPaths: thousands of long paths go through bash in
// chunks, each answered in order.
func TestShellRemoteManyPaths(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("d", 200)
	if err := os.MkdirAll(filepath.Join(dir, long), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(long, filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	var q devices.Query
	var want []devices.Resolved
	// Existing paths (one readlink per chunk), but one missing in the
	// last chunk: that chunk alone is resolved path by path.
	for i := 0; i < 400; i++ {
		sub := fmt.Sprintf("%s-%d", long, i)
		if i != 390 {
			if err := os.Mkdir(filepath.Join(dir, long, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		q.Resolve = append(q.Resolve, filepath.Join(dir, "l", sub))
		want = append(want, devices.Resolved{Path: filepath.Join(dir, long, sub), Exists: i != 390})
	}
	q.Resolve = append(q.Resolve, filepath.Join(dir, "l"))
	want = append(want, devices.Resolved{Path: filepath.Join(dir, long), Exists: true})
	// Reads in several chunks, with a missing file and one over the limit.
	var wantFiles []string
	for i := 0; i < 400; i++ {
		name := fmt.Sprintf("%s-f%d", long, i)
		data := strings.Repeat(fmt.Sprint(i), i%7)
		switch i {
		case 17:
			data = "" // missing
		case 250:
			data = strings.Repeat("b", 2*devices.MaxManifestBytes)
		}
		if i != 17 {
			if err := os.WriteFile(filepath.Join(dir, long, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if i == 250 {
			data = data[:devices.MaxManifestBytes+1]
		}
		q.Read = append(q.Read, filepath.Join(dir, "l", name))
		wantFiles = append(wantFiles, data)
	}
	a, err := ShellRemote{Run: bashRun(t)}.Fetch(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, a.Resolved); d != "" {
		t.Errorf("resolved (-want +got):\n%s", d)
	}
	for i, f := range a.Files {
		if i == 17 {
			if !errors.Is(f.Err, fs.ErrNotExist) {
				t.Errorf("missing file: %v", f.Err)
			}
			continue
		}
		if f.Err != nil || string(f.Data) != wantFiles[i] {
			t.Errorf("file %d: %d bytes, %v; want %d bytes", i, len(f.Data), f.Err, len(wantFiles[i]))
		}
	}
}

// TestShellRemoteFastPath: when every path exists, one readlink resolves
// them all, and the answer is the same as path by path.
func TestShellRemoteFastPath(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a b/x", "it's/y", "real"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("real", filepath.Join(dir, "link\twith tab")); err != nil {
		t.Fatal(err)
	}
	q := devices.Query{Resolve: []string{filepath.Join(dir, "a b", "x"), filepath.Join(dir, "it's", "y"), filepath.Join(dir, "link\twith tab")}}
	var script string
	run := bashRun(t)
	r := ShellRemote{Run: func(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
		script = cmd
		return run(ctx, cmd, stdin)
	}}
	a, err := r.Fetch(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	want := []devices.Resolved{
		{Path: filepath.Join(dir, "a b", "x"), Exists: true},
		{Path: filepath.Join(dir, "it's", "y"), Exists: true},
		{Path: filepath.Join(dir, "real"), Exists: true},
	}
	if d := cmp.Diff(want, a.Resolved); d != "" {
		t.Errorf("resolved (-want +got):\n%s", d)
	}
	if !strings.Contains(script, "readlink -ez --") {
		t.Errorf("no batched readlink in the script:\n%s", script)
	}
	// The same query with one path missing takes the slow path and still
	// answers every item.
	q.Resolve = append(q.Resolve, filepath.Join(dir, "missing"))
	a, err = r.Fetch(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, devices.Resolved{Path: filepath.Join(dir, "missing")})
	if d := cmp.Diff(want, a.Resolved); d != "" {
		t.Errorf("resolved with one missing (-want +got):\n%s", d)
	}
}

func TestParseFetchOutputBatch(t *testing.T) {
	q := devices.Query{Resolve: []string{"/a", "/b"}}
	const n = "pkN"
	for name, tt := range map[string]struct {
		out  string
		want []devices.Resolved
		ok   bool
	}{
		"batch":               {n + ":b0:E:/x\x00/y\x00" + n + ":end:", []devices.Resolved{{Path: "/x", Exists: true}, {Path: "/y", Exists: true}}, true},
		"batch cancelled":     {n + ":b0:E:/x\x00" + n + ":b0:X:" + n + ":p0:E:/x" + n + ":p1:M:/b" + n + ":end:", []devices.Resolved{{Path: "/x", Exists: true}, {Path: "/b"}}, true},
		"batch short":         {n + ":b0:E:/x\x00" + n + ":end:", nil, false},
		"batch unterminated":  {n + ":b0:E:/x\x00/y" + n + ":end:", nil, false},
		"cancelled, no items": {n + ":b0:E:" + n + ":b0:X:" + n + ":end:", nil, false},
	} {
		a, err := ParseFetchOutput(n, q, []byte(tt.out))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%t", name, err, tt.ok)
			continue
		}
		if tt.ok {
			if d := cmp.Diff(tt.want, a.Resolved); d != "" {
				t.Errorf("%s (-want +got):\n%s", name, d)
			}
		}
	}
}
