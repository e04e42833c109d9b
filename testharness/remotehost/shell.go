package remotehost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/testharness/remotefs"
)

// NotAvailable is what a program other than the few the remote offers
// prints, after its name, on stderr; it exits with status 127.
const NotAvailable = "not available on the conformance remote"

// shell runs command strings with bash semantics (mvdan.cc/sh) over the
// remote filesystem. Builtins (echo, printf, test, [, true, false, cd, set,
// exit, ...) come from the interpreter; its stat, access, open and readdir
// handlers are mapped onto the remote filesystem. The programs are mkdir,
// cat, head (-c only), stat (-c %s only), readlink and realpath.
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

// abs makes p absolute against the shell's directory, without cleaning:
// "link/.." must reach the resolver as it is.
func abs(dir, p string) string {
	if p == "" || strings.HasPrefix(p, "/") {
		return p
	}
	return strings.TrimSuffix(dir, "/") + "/" + p
}

// program is one of the remote's few programs. It returns its exit status.
type program func(s *shell, io *stdio, args []string) int

type stdio struct {
	dir      string
	in       io.Reader
	out, err io.Writer
	name     string // the program's name, for messages
}

func (p *stdio) errorf(format string, args ...any) {
	fmt.Fprintf(p.err, p.name+": "+format+"\n", args...)
}

var programs = map[string]program{
	"mkdir":    mkdirProgram,
	"cat":      catProgram,
	"readlink": readlinkProgram,
	"realpath": realpathProgram,
	"head":     headProgram,
	"stat":     statProgram,
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
	f, err := s.fs.OpenFile(abs(interp.HandlerCtx(ctx).Dir, path), flag, perm)
	if err != nil {
		return nil, err // an *fs.PathError: the shell prints it, status 1
	}
	return f, nil
}

func (s *shell) readDir(ctx context.Context, path string) ([]fs.DirEntry, error) {
	return s.fs.ReadDir(abs(interp.HandlerCtx(ctx).Dir, path))
}

func (s *shell) stat(ctx context.Context, name string, follow bool) (fs.FileInfo, error) {
	name = abs(interp.HandlerCtx(ctx).Dir, name)
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

// strerror renders err as the C library does ("No such file or directory").
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return strings.ToUpper(msg[:1]) + msg[1:]
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// quote renders a file name as GNU coreutils' quote() does in the C locale:
// always in single quotes.
func quote(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "$" + strconv.Quote(s)
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteIfNeeded renders a file name as GNU's quotef(): bare when it is made
// of characters a shell leaves alone, else quoted.
func quoteIfNeeded(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%^=", r))
	}) {
		return s
	}
	return quote(s)
}

// options parses GNU-style arguments: short flags (combinable), long flags
// from longs (mapped to a short letter), options anywhere before "--", and
// "-" as an operand. A flag's value is 1 + the position of its last
// occurrence (0: absent), so "the last of -f, -e, -m wins" can be decided.
// It reports an error message as GNU does.
func options(p *stdio, args []string, shorts string, longs map[string]byte) (map[byte]int, []string, bool) {
	flags := map[byte]int{}
	n := 0
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			return flags, operands, true
		case strings.HasPrefix(a, "--"):
			c, ok := longs[a[2:]]
			if !ok {
				p.errorf("unrecognized option %s", quote(a))
				fmt.Fprintf(p.err, "Try '%s --help' for more information.\n", p.name)
				return nil, nil, false
			}
			n++
			flags[c] = n
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				if !strings.ContainsRune(shorts, rune(a[j])) {
					p.errorf("invalid option -- '%c'", a[j])
					fmt.Fprintf(p.err, "Try '%s --help' for more information.\n", p.name)
					return nil, nil, false
				}
				n++
				flags[a[j]] = n
			}
		default:
			operands = append(operands, a)
		}
	}
	return flags, operands, true
}

func missingOperand(p *stdio) int {
	p.errorf("missing operand")
	fmt.Fprintf(p.err, "Try '%s --help' for more information.\n", p.name)
	return 1
}

// mkdir [-p|--parents] [--] DIR...
func mkdirProgram(s *shell, p *stdio, args []string) int {
	flags, dirs, ok := options(p, args, "p", map[string]byte{"parents": 'p'})
	if !ok {
		return 1
	}
	if len(dirs) == 0 {
		return missingOperand(p)
	}
	status := 0
	for _, d := range dirs {
		var err error
		if flags['p'] > 0 {
			err = s.fs.MkdirAll(abs(p.dir, d))
		} else {
			err = s.fs.Mkdir(abs(p.dir, d), 0o755)
		}
		if err != nil {
			p.errorf("cannot create directory %s: %s", quote(d), strerror(err))
			status = 1
		}
	}
	return status
}

// cat [-u] [--] [FILE|-]...
func catProgram(s *shell, p *stdio, args []string) int {
	_, files, ok := options(p, args, "u", nil)
	if !ok {
		return 1
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	status := 0
	for _, f := range files {
		if f == "-" {
			if p.in != nil {
				if _, err := io.Copy(p.out, p.in); err != nil {
					p.errorf("-: %s", strerror(err))
					status = 1
				}
			}
			continue
		}
		b, err := s.fs.ReadFile(abs(p.dir, f))
		if err != nil {
			p.errorf("%s: %s", quoteIfNeeded(f), strerror(err))
			status = 1
			continue
		}
		if _, err := p.out.Write(b); err != nil {
			p.errorf("write error: %s", strerror(err))
			return 1
		}
	}
	return status
}

// head -c N [--] [FILE|-]... : the first N bytes of each file (GNU's
// headers for several files are left out: nothing here asks for them).
func headProgram(s *shell, p *stdio, args []string) int {
	var n int64 = -1
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i+1:]...)
			i = len(args)
		case a == "-q":
			// No headers are printed in any case.
		case a == "-c" && i+1 < len(args):
			v, err := strconv.ParseInt(args[i+1], 10, 64)
			if err != nil || v < 0 {
				p.errorf("invalid number of bytes: %s", quote(args[i+1]))
				return 1
			}
			n = v
			i++
		case strings.HasPrefix(a, "-") && a != "-":
			p.errorf("invalid option -- '%s'", strings.TrimPrefix(a, "-"))
			return 1
		default:
			rest = append(rest, a)
		}
	}
	if n < 0 {
		p.errorf("only -c N is available on the conformance remote")
		return 1
	}
	if len(rest) == 0 {
		rest = []string{"-"}
	}
	status := 0
	for _, f := range rest {
		var r io.Reader
		if f == "-" {
			if p.in == nil {
				continue
			}
			r = p.in
		} else {
			fh, err := s.fs.OpenFile(abs(p.dir, f), os.O_RDONLY, 0)
			if err != nil {
				p.errorf("cannot open %s for reading: %s", quote(f), strerror(err))
				status = 1
				continue
			}
			defer fh.Close()
			r = fh
		}
		if _, err := io.Copy(p.out, io.LimitReader(r, n)); err != nil {
			p.errorf("error reading %s: %s", quote(f), strerror(err))
			status = 1
		}
	}
	return status
}

// stat [-L] -c %s [--] FILE... : each file's size in bytes, one a line.
func statProgram(s *shell, p *stdio, args []string) int {
	follow, format := false, ""
	var files []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			files = append(files, args[i+1:]...)
			i = len(args)
		case a == "-L":
			follow = true
		case a == "-c" && i+1 < len(args):
			format = args[i+1]
			i++
		case strings.HasPrefix(a, "-"):
			p.errorf("invalid option -- '%s'", strings.TrimPrefix(a, "-"))
			return 1
		default:
			files = append(files, a)
		}
	}
	if format != "%s" {
		p.errorf("only -c %%s is available on the conformance remote")
		return 1
	}
	if len(files) == 0 {
		return missingOperand(p)
	}
	status := 0
	for _, f := range files {
		var fi fs.FileInfo
		var err error
		if follow {
			fi, err = s.fs.Stat(abs(p.dir, f))
		} else {
			fi, err = s.fs.Lstat(abs(p.dir, f))
		}
		if err != nil {
			p.errorf("cannot stat %s: %s", quote(f), strerror(err))
			status = 1
			continue
		}
		fmt.Fprintf(p.out, "%d\n", fi.Size())
	}
	return status
}

// readlink [-f|-e|-m] [-n] [-z] [-q|-s|-v] [--] FILE...
func readlinkProgram(s *shell, p *stdio, args []string) int {
	flags, files, ok := options(p, args, "femnqsvz", map[string]byte{
		"canonicalize": 'f', "canonicalize-existing": 'e', "canonicalize-missing": 'm',
		"no-newline": 'n', "quiet": 'q', "silent": 's', "verbose": 'v', "zero": 'z',
	})
	if !ok {
		return 1
	}
	if len(files) == 0 {
		return missingOperand(p)
	}
	canon, mode := false, remotefs.AllButLast
	last := 0 // the last of -f, -e, -m wins
	for _, m := range []struct {
		flag byte
		mode remotefs.Mode
	}{{'f', remotefs.AllButLast}, {'e', remotefs.Existing}, {'m', remotefs.Missing}} {
		if flags[m.flag] > last {
			canon, mode, last = true, m.mode, flags[m.flag]
		}
	}
	end := "\n"
	if flags['z'] > 0 {
		end = "\x00"
	}
	if flags['n'] > 0 {
		if len(files) > 1 {
			p.errorf("ignoring --no-newline with multiple arguments")
		} else {
			end = ""
		}
	}
	status := 0
	for _, f := range files {
		var out string
		var err error
		if canon {
			out, err = s.fs.Canonicalize(abs(p.dir, f), mode)
		} else {
			out, err = s.fs.Readlink(abs(p.dir, f))
		}
		if err != nil {
			if flags['v'] > 0 {
				p.errorf("%s: %s", quoteIfNeeded(f), strerror(err))
			}
			status = 1
			continue
		}
		fmt.Fprint(p.out, out+end)
	}
	return status
}

// realpath [-e|-m] [-q] [-z] [--] FILE...
func realpathProgram(s *shell, p *stdio, args []string) int {
	flags, files, ok := options(p, args, "emqzE", map[string]byte{
		"canonicalize": 'E', "canonicalize-existing": 'e', "canonicalize-missing": 'm',
		"quiet": 'q', "zero": 'z',
	})
	if !ok {
		return 1
	}
	if len(files) == 0 {
		return missingOperand(p)
	}
	mode, last := remotefs.AllButLast, 0 // the last of -E, -e, -m wins
	for _, m := range []struct {
		flag byte
		mode remotefs.Mode
	}{{'E', remotefs.AllButLast}, {'e', remotefs.Existing}, {'m', remotefs.Missing}} {
		if flags[m.flag] > last {
			mode, last = m.mode, flags[m.flag]
		}
	}
	end := "\n"
	if flags['z'] > 0 {
		end = "\x00"
	}
	status := 0
	for _, f := range files {
		out, err := s.fs.Canonicalize(abs(p.dir, f), mode)
		if err != nil {
			if flags['q'] == 0 {
				p.errorf("%s: %s", quoteIfNeeded(f), strerror(err))
			}
			status = 1
			continue
		}
		fmt.Fprint(p.out, out+end)
	}
	return status
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
