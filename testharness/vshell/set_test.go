package vshell

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A machine's Set replaces the guest's programs: its programs run with the
// command's directory, streams and filesystem; a missing one is reported
// as the set says (127); `command -v` and `type` ask its Lookup; scripts
// are bash; the process's own kill and wait stay.
func TestSetRunsItsOwnProgramSet(t *testing.T) {
	set := &Set{
		Programs: map[string]Program{
			"greet": func(c *Cmd, args []string) int {
				in, _ := io.ReadAll(c.Stdin)
				fmt.Fprintf(c.Stdout, "%s in %s: %s %q\n", c.Name, c.Dir, strings.Join(args, ","), in)
				if _, err := c.FS.Stat(c.Abs(".")); err != nil {
					c.Errorf("%v", err)
					return 1
				}
				return 3
			},
		},
		Dirs:     []string{"/usr/bin/"},
		Shell:    "bash",
		NotFound: func(w io.Writer, name string) { fmt.Fprintf(w, "%s: missing here\n", name) },
		Lookup: func(c *Cmd, args []string) int {
			fmt.Fprintf(c.Stdout, "lookup %s\n", strings.Join(args, " "))
			return 0
		},
	}
	out, errw := &lockedBuf{}, &lockedBuf{}
	p, err := Start(context.Background(), Config{
		FS: dirFS{t.TempDir()}, Dir: "/", Set: set, Stdout: out, Stderr: errw,
		Argv: []string{"bash", "-c", `[[ a == a ]] && echo hi | /usr/bin/greet x y; echo "st $?"; sleep 1; echo "st $?"; command -v greet; type -t cat; wait`},
	})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	want := "greet in /: x,y \"hi\\n\"\nst 3\nst 127\nlookup command-v greet\nlookup type -t cat\n"
	if d := cmp.Diff(want, out.String()); d != "" {
		t.Errorf("stdout (-want +got):\n%s", d)
	}
	if d := cmp.Diff("sleep: missing here\n", errw.String()); d != "" {
		t.Errorf("stderr (-want +got):\n%s", d)
	}
	if p.ExitStatus() != 0 {
		t.Errorf("status %d", p.ExitStatus())
	}
	// A syntax error names the set's shell.
	_, err = Start(context.Background(), Config{FS: dirFS{t.TempDir()}, Set: set, Argv: []string{"bash", "-c", "echo 'open"}})
	if err == nil || !strings.HasPrefix(err.Error(), "vshell: bash: 1:6:") {
		t.Errorf("syntax error: %v", err)
	}
}
