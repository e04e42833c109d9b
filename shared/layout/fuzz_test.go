package layout

import (
	"bytes"
	"os/exec"
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/shared"
)

// shellWords parses a command line with a real shell parser (bash dialect)
// and returns its words, expanded as a shell would expand literal words.
func shellWords(tb testing.TB, line string) ([]string, error) {
	tb.Helper()
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(line), "")
	if err != nil {
		return nil, err
	}
	if len(f.Stmts) != 1 {
		tb.Fatalf("%q parses to %d statements", line, len(f.Stmts))
	}
	call, ok := f.Stmts[0].Cmd.(*syntax.CallExpr)
	if !ok {
		tb.Fatalf("%q is not a simple command", line)
	}
	words := make([]string, len(call.Args))
	for i, w := range call.Args {
		s, err := expand.Literal(&expand.Config{}, w)
		if err != nil {
			return nil, err
		}
		words[i] = s
	}
	return words, nil
}

func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "a", "it's", "''", "a b", "$(x)", "`x`", "\\", "\n", "\"'\"", "!", "*?[a]", "~", "-n", "${x:-y}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			t.Skip("a shell word cannot hold NUL")
		}
		if !utf8.ValidString(s) {
			// Derive refuses such paths (the protocol's strings are UTF-8),
			// and the Go shell parser reads UTF-8 only; TestQuoteInBash
			// covers raw bytes with a real bash.
			t.Skip("not UTF-8")
		}
		if strings.Contains(s, "\r") {
			// The Go shell parser reads "\r\n" as a line break, as a
			// script from Windows would mean it; bash keeps the "\r".
			// Ask bash.
			out, err := exec.Command("bash", "-c", "printf %s "+Quote(s)).Output()
			if err != nil || string(out) != s {
				t.Fatalf("bash gives %q, %v for Quote(%q) = %s", out, err, s, Quote(s))
			}
			return
		}
		words, err := shellWords(t, "printf %s "+Quote(s))
		if err != nil {
			t.Fatalf("Quote(%q) = %s does not parse: %v", s, Quote(s), err)
		}
		if len(words) != 3 || words[2] != s {
			t.Fatalf("Quote(%q) = %s parses to %q, want one word equal to the input", s, Quote(s), words[1:])
		}
	})
}

// TestQuoteInBash runs quoted words through a real bash: each must come back
// byte for byte.
func TestQuoteInBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		testenv.SkipUnlessCI(t, "bash not found")
	}
	inputs := []string{"", "it's", "''", "a  b", "$(echo pwned)", "`id`", "\\'", "\n\n", "tab\there", "\"", "!x", "*", "~root", "-e", "${HOME}", "é ü 日本", "\x01\x7f", "\xff\xfe\x80", "a\xc3"}
	var script strings.Builder
	for _, s := range inputs {
		script.WriteString("printf '%s\\0' " + Quote(s) + "\n")
	}
	out, err := exec.Command(bash, "-c", script.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(inputs) {
		t.Fatalf("bash printed %d words, want %d: %q", len(got), len(inputs), out)
	}
	for i := range inputs {
		if got[i] != inputs[i] {
			t.Errorf("bash gave %q for %q", got[i], inputs[i])
		}
	}
}

// TestMkdirCommandParses: the command is two statements; mkdir gets every
// directory as exactly one word.
func TestMkdirCommandParses(t *testing.T) {
	dirs := []string{"/a b", "/it's", "/$(x)", "/;rm -rf /"}
	cmd := MkdirCommand(dirs)
	rest, ok := strings.CutPrefix(cmd, "set -euo pipefail; ")
	if !ok {
		t.Fatalf("command %q lacks the set prefix", cmd)
	}
	words, err := shellWords(t, rest)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{"mkdir", "-p"}, dirs...)
	if strings.Join(words, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("words %q, want %q", words, want)
	}
}

func FuzzContainment(f *testing.F) {
	f.Add("/var/tmp/pikaci", "/tmp/run/jobs/job", "job", "abc123", true, "workspace-deps", "staged-linux-rust/workspace-deps")
	f.Add("/", "/r/jobs/j", "..", "", false, "n", "x")
	f.Add("/w", "/a/b/c", "j", "../..", true, "p", "../../etc")
	f.Add("/w/x", "/a/../b/c", "j/..", "h", true, ".", "./a")
	f.Fuzz(func(t *testing.T, workDir, jobDir, jobID, hash string, staged bool, name, rel string) {
		s := shared.JobSpec{
			Job:    shared.Job{ID: jobID, Staged: staged},
			Host:   shared.HostPaths{JobDir: jobDir, SnapshotContentHash: hash, StagedPayloads: []shared.StagedPayload{{Name: name, LocalDir: jobDir + "/" + rel}}},
			Remote: shared.Remote{Host: "h", WorkDir: workDir},
		}
		l, err := Derive(s)
		if err != nil {
			return
		}
		under := func(p, root string) bool {
			if root == "/" {
				return strings.HasPrefix(p, "/") && p != "/"
			}
			return strings.HasPrefix(p, root+"/")
		}
		for _, d := range append(l.Directories(), l.SnapshotDir) {
			if path.Clean(d) != d || !under(d, workDir) {
				t.Fatalf("derived %q leaves the work dir %q", d, workDir)
			}
			if strings.IndexByte(d, 0) >= 0 {
				t.Fatalf("derived %q holds NUL", d)
			}
		}
		for _, p := range l.Payloads {
			if !under(p.RemoteDir, l.JobDir) || path.Clean(p.RemoteDir) != p.RemoteDir {
				t.Fatalf("payload dir %q leaves the job dir %q", p.RemoteDir, l.JobDir)
			}
		}
		if !under(l.JobDir, l.RunDir) || path.Dir(path.Dir(l.JobDir)) != l.RunDir {
			t.Fatalf("job dir %q is not W/runs/R/jobs/J under %q", l.JobDir, l.RunDir)
		}
		// The command names exactly the directories, each one word.
		args := strings.TrimPrefix(l.MkdirCommand(), "set -euo pipefail; mkdir -p ")
		var got []string
		if strings.Contains(args, "\r") {
			// See FuzzQuote: the Go parser reads "\r\n" as a line break.
			out, err := exec.Command("bash", "-c", "printf '%s\\0' "+args).Output()
			if err != nil {
				t.Fatal(err)
			}
			got = strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		} else {
			words, err := shellWords(t, "mkdir -p "+args)
			if err != nil {
				t.Fatal(err)
			}
			got = words[2:]
		}
		if !bytes.Equal([]byte(strings.Join(got, "\x00")), []byte(strings.Join(l.Directories(), "\x00"))) {
			t.Fatalf("mkdir words %q differ from directories %q", got, l.Directories())
		}
	})
}
