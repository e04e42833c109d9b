package remotehost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/vfs"
)

// NotAvailable is what a program other than the few the remote offers
// prints, after its name, on stderr; it exits with status 127.
const NotAvailable = "not available on the conformance remote"

// shell runs command strings with bash semantics (mvdan.cc/sh) over the
// remote filesystem. Builtins (echo, printf, test, [, true, false, cd, set,
// exit, ...) come from the interpreter; its stat, access, open and readdir
// handlers are mapped onto the remote filesystem. The programs are mkdir,
// cat, head (-c only), stat (-c %s only), readlink and realpath
// (programs.go), tar -x, mv -T and rm (staging.go) and one form of find
// (find.go).
type shell struct {
	fs   *remotefs.FS
	user string
}

// run parses and runs command and returns its exit status. The interpreter
// needs an *os.File (or nil) as stdin.
func (s *shell) run(ctx context.Context, command string, stdin *os.File, stdout, stderr io.Writer) uint32 {
	file, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(command), "")
	if err != nil {
		fmt.Fprintf(stderr, "bash: %v\n", err)
		return 2 // bash's status for a syntax error
	}
	home := "/home/" + s.user
	if s.user == "root" {
		home = "/root"
	}
	r, err := interp.New(
		interp.Env(expand.ListEnviron(
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME="+home,
			"USER="+s.user,
			"LOGNAME="+s.user,
			"SHELL=/bin/bash",
			"LANG=C.UTF-8",
		)),
		interp.Dir("/"),
		interp.StdIO(stdin, stdout, stderr),
		interp.CallHandler(lookupCalls),
		interp.ExecHandlers(func(interp.ExecHandlerFunc) interp.ExecHandlerFunc { return s.exec }),
		interp.OpenHandler(s.open),
		interp.ReadDirHandler2(s.readDir),
		interp.StatHandler(s.stat),
		interp.AccessHandler(s.access),
	)
	if err != nil {
		fmt.Fprintf(stderr, "conformance remote: %v\n", err)
		return 255
	}
	err = r.Run(ctx, file)
	if err == nil {
		return 0
	}
	var status interp.ExitStatus
	if errors.As(err, &status) {
		return uint32(status)
	}
	fmt.Fprintf(stderr, "bash: %v\n", err)
	return 255
}

func (s *shell) exec(ctx context.Context, args []string) error {
	hc := interp.HandlerCtx(ctx)
	name := args[0]
	base := name
	for _, dir := range []string{"/bin/", "/usr/bin/"} {
		if strings.HasPrefix(name, dir) && !strings.Contains(name[len(dir):], "/") {
			base = name[len(dir):]
		}
	}
	if lookup, ok := lookups[name]; ok {
		return lookup(hc.Stdout, hc.Stderr, args[1:])
	}
	prog, ok := programs[base]
	if !ok {
		fmt.Fprintf(hc.Stderr, "%s: %s\n", name, NotAvailable)
		return interp.ExitStatus(127)
	}
	status := prog(s, &stdio{dir: hc.Dir, in: hc.Stdin, out: hc.Stdout, err: hc.Stderr, name: base}, args[1:])
	if status != 0 {
		return interp.ExitStatus(uint8(status))
	}
	return nil
}

type devNull struct{}

func (devNull) Read([]byte) (int, error)    { return 0, io.EOF }
func (devNull) Write(b []byte) (int, error) { return len(b), nil }
func (devNull) Close() error                { return nil }

func (s *shell) open(ctx context.Context, path string, flag int, perm os.FileMode) (io.ReadWriteCloser, error) {
	if path == "/dev/null" {
		return devNull{}, nil
	}
	f, err := s.fs.OpenFile(vfs.Abs(interp.HandlerCtx(ctx).Dir, path), flag, perm)
	if err != nil {
		return nil, err // an *fs.PathError: the shell prints it, status 1
	}
	return f, nil
}

func (s *shell) readDir(ctx context.Context, path string) ([]fs.DirEntry, error) {
	return s.fs.ReadDir(vfs.Abs(interp.HandlerCtx(ctx).Dir, path))
}

func (s *shell) stat(ctx context.Context, name string, follow bool) (fs.FileInfo, error) {
	name = vfs.Abs(interp.HandlerCtx(ctx).Dir, name)
	if follow {
		return s.fs.Stat(name)
	}
	return s.fs.Lstat(name)
}

// access: the remote user may read and write everything; executing needs an
// x bit on a file.
func (s *shell) access(ctx context.Context, path string, mode interp.AccessMode) error {
	fi, err := s.fs.Stat(path)
	if err != nil {
		return err
	}
	if mode&interp.AccessExec != 0 && !fi.IsDir() && fi.Mode().Perm()&0o111 == 0 {
		return &fs.PathError{Op: "access", Path: path, Err: syscall.EACCES}
	}
	return nil
}

// The interpreter's `command -v` and `type` search PATH on this machine's
// filesystem, which would tell the remote's scripts about the harness's
// programs. lookupCalls sends them to the remote's own lookup instead. (A
// shell function of the same name is reported as missing: the call handler
// cannot see functions.)
func lookupCalls(_ context.Context, args []string) ([]string, error) {
	switch {
	case args[0] == "command" && len(args) > 1 && args[1] == "-v":
		return append([]string{lookupCommandV}, args[2:]...), nil
	case args[0] == "type":
		return append([]string{lookupType}, args[1:]...), nil
	}
	return args, nil
}

// Names no script can call: they contain a NUL byte.
const (
	lookupCommandV = "\x00command -v"
	lookupType     = "\x00type"
)

var lookups = map[string]func(out, errw io.Writer, args []string) error{
	lookupCommandV: func(out, _ io.Writer, args []string) error {
		status := uint8(0)
		for _, a := range args {
			status = 0
			switch {
			case interp.IsBuiltin(a):
				fmt.Fprintln(out, a)
			case programs[a] != nil:
				fmt.Fprintln(out, "/usr/bin/"+a)
			default:
				status = 1
			}
		}
		if status != 0 {
			return interp.ExitStatus(status)
		}
		return nil
	},
	lookupType: func(out, errw io.Writer, args []string) error {
		mode := ""
		for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
			if args[0] == "--" {
				args = args[1:]
				break
			}
			switch args[0] {
			case "-p", "-P", "-t":
				mode = args[0]
			default:
				fmt.Fprintf(errw, "bash: type: %s: invalid option\n", args[0])
				return interp.ExitStatus(2)
			}
			args = args[1:]
		}
		status := uint8(0)
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
				if mode == "" {
					fmt.Fprintf(errw, "bash: type: %s: not found\n", a)
				}
			case mode == "-t":
				fmt.Fprintln(out, kind)
			case mode == "-p" || mode == "-P":
				if where != "" {
					fmt.Fprintln(out, where)
				}
			case kind == "keyword":
				fmt.Fprintf(out, "%s is a shell keyword\n", a)
			case kind == "builtin":
				fmt.Fprintf(out, "%s is a shell builtin\n", a)
			default:
				fmt.Fprintf(out, "%s is %s\n", a, where)
			}
		}
		if status != 0 {
			return interp.ExitStatus(status)
		}
		return nil
	},
}
