package remotehost

import (
	"context"
	"fmt"
	"io"
	"strings"

	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/vshell"
)

// NotAvailable is what a program other than the few the remote offers
// prints, after its name, on stderr; it exits with status 127.
const NotAvailable = "not available on the conformance remote"

// shell runs command strings with the harness's one shell (vshell, bash
// semantics) over the remote filesystem, with the remote's program set:
// builtins (echo, printf, test, [, true, false, cd, set, exit, ...) come
// from the interpreter; the programs are mkdir, cat, head (-c only), stat
// (-c %s only), readlink and realpath (programs.go), tar -x, mv -T and rm
// (staging.go) and one form of find (find.go).
type shell struct {
	fs   *remotefs.FS
	user string
	set  *vshell.Set
}

func newShell(fsys *remotefs.FS, user string) *shell {
	s := &shell{fs: fsys, user: user}
	set := &vshell.Set{
		Programs: map[string]vshell.Program{},
		Dirs:     []string{"/bin/", "/usr/bin/"},
		Shell:    "bash",
		NotFound: func(w io.Writer, name string) { fmt.Fprintf(w, "%s: %s\n", name, NotAvailable) },
		Lookup:   lookup,
	}
	for name, prog := range programs {
		set.Programs[name] = func(c *vshell.Cmd, args []string) int {
			return prog(s, c, args)
		}
	}
	s.set = set
	return s
}

// run runs command and returns its exit status once it and every job it
// started in the background have ended.
func (s *shell) run(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) uint32 {
	home := "/home/" + s.user
	if s.user == "root" {
		home = "/root"
	}
	p, err := vshell.Start(ctx, vshell.Config{
		FS:   s.fs,
		Argv: []string{"bash", "-c", command},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=" + home,
			"USER=" + s.user,
			"LOGNAME=" + s.user,
			"SHELL=/bin/bash",
			"LANG=C.UTF-8",
		},
		Dir:    "/",
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: stderr,
		Set:    s.set,
	})
	if err != nil {
		fmt.Fprintf(stderr, "%s\n", strings.TrimPrefix(err.Error(), "vshell: "))
		return 2 // bash's status for a syntax error
	}
	<-p.Done()
	return uint32(p.ExitStatus())
}

// lookup is the remote's `command -v` and `type` (args[0] says which), as
// bash answers them, over the remote's programs. (A shell function of the
// same name is reported as missing: the lookup cannot see functions.)
func lookup(c *vshell.Cmd, args []string) int {
	mode, args := args[0], args[1:]
	if mode == "command-v" {
		status := 0
		for _, a := range args {
			status = 0
			switch {
			case interp.IsBuiltin(a):
				fmt.Fprintln(c.Stdout, a)
			case programs[a] != nil:
				fmt.Fprintln(c.Stdout, "/usr/bin/"+a)
			default:
				status = 1
			}
		}
		return status
	}
	kindOf := ""
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		if args[0] == "--" {
			args = args[1:]
			break
		}
		switch args[0] {
		case "-p", "-P", "-t":
			kindOf = args[0]
		default:
			fmt.Fprintf(c.Stderr, "bash: type: %s: invalid option\n", args[0])
			return 2
		}
		args = args[1:]
	}
	status := 0
	for _, a := range args {
		kind, where := "", ""
		switch {
		case syntax.IsKeyword(a):
			kind = "keyword"
		case interp.IsBuiltin(a):
			kind = "builtin"
		case programs[a] != nil:
			kind, where = "file", "/usr/bin/"+a
		}
		switch {
		case kind == "":
			status = 1
			if kindOf == "" {
				fmt.Fprintf(c.Stderr, "bash: type: %s: not found\n", a)
			}
		case kindOf == "-t":
			fmt.Fprintln(c.Stdout, kind)
		case kindOf == "-p" || kindOf == "-P":
			if where != "" {
				fmt.Fprintln(c.Stdout, where)
			}
		case kind == "keyword":
			fmt.Fprintf(c.Stdout, "%s is a shell keyword\n", a)
		case kind == "builtin":
			fmt.Fprintf(c.Stdout, "%s is a shell builtin\n", a)
		default:
			fmt.Fprintf(c.Stdout, "%s is %s\n", a, where)
		}
	}
	return status
}
