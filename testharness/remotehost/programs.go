package remotehost

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/testharness/vfs"
	"github.com/pikaci/vmexec/testharness/vshell"
)

// program is one of the remote's few programs, run by the one shell
// (vshell) with the remote's filesystem at hand. It returns its exit
// status.
type program func(s *shell, p *vshell.Cmd, args []string) int

var programs = map[string]program{
	"mkdir":    mkdirProgram,
	"cat":      catProgram,
	"readlink": readlinkProgram,
	"realpath": realpathProgram,
	"head":     headProgram,
	"stat":     statProgram,
}

// mkdir [-p|--parents] [--] DIR...
func mkdirProgram(s *shell, p *vshell.Cmd, args []string) int {
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
			err = s.fs.MkdirAll(p.Abs(d))
		} else {
			err = s.fs.Mkdir(p.Abs(d), 0o755)
		}
		if err != nil {
			p.Errorf("cannot create directory %s: %s", quote(d), vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

// cat [-u] [--] [FILE|-]...
func catProgram(s *shell, p *vshell.Cmd, args []string) int {
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
			if p.Stdin != nil {
				if _, err := io.Copy(p.Stdout, p.Stdin); err != nil {
					p.Errorf("-: %s", vfs.Strerror(err))
					status = 1
				}
			}
			continue
		}
		b, err := s.fs.ReadFile(p.Abs(f))
		if err != nil {
			p.Errorf("%s: %s", quoteIfNeeded(f), vfs.Strerror(err))
			status = 1
			continue
		}
		if _, err := p.Stdout.Write(b); err != nil {
			p.Errorf("write error: %s", vfs.Strerror(err))
			return 1
		}
	}
	return status
}

// head -c N [--] [FILE|-]... : the first N bytes of each file (GNU's
// headers for several files are left out: nothing here asks for them).
func headProgram(s *shell, p *vshell.Cmd, args []string) int {
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
				p.Errorf("invalid number of bytes: %s", quote(args[i+1]))
				return 1
			}
			n = v
			i++
		case strings.HasPrefix(a, "-") && a != "-":
			p.Errorf("invalid option -- '%s'", strings.TrimPrefix(a, "-"))
			return 1
		default:
			rest = append(rest, a)
		}
	}
	if n < 0 {
		p.Errorf("only -c N is available on the conformance remote")
		return 1
	}
	if len(rest) == 0 {
		rest = []string{"-"}
	}
	status := 0
	for _, f := range rest {
		var r io.Reader
		if f == "-" {
			if p.Stdin == nil {
				continue
			}
			r = p.Stdin
		} else {
			fh, err := s.fs.OpenFile(p.Abs(f), os.O_RDONLY, 0)
			if err != nil {
				p.Errorf("cannot open %s for reading: %s", quote(f), vfs.Strerror(err))
				status = 1
				continue
			}
			defer fh.Close()
			r = fh
		}
		if _, err := io.Copy(p.Stdout, io.LimitReader(r, n)); err != nil {
			p.Errorf("error reading %s: %s", quote(f), vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

// stat [-L] -c %s [--] FILE... : each file's size in bytes, one a line.
func statProgram(s *shell, p *vshell.Cmd, args []string) int {
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
			p.Errorf("invalid option -- '%s'", strings.TrimPrefix(a, "-"))
			return 1
		default:
			files = append(files, a)
		}
	}
	if format != "%s" {
		p.Errorf("only -c %%s is available on the conformance remote")
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
			fi, err = s.fs.Stat(p.Abs(f))
		} else {
			fi, err = s.fs.Lstat(p.Abs(f))
		}
		if err != nil {
			p.Errorf("cannot stat %s: %s", quote(f), vfs.Strerror(err))
			status = 1
			continue
		}
		fmt.Fprintf(p.Stdout, "%d\n", fi.Size())
	}
	return status
}

// readlink [-f|-e|-m] [-n] [-z] [-q|-s|-v] [--] FILE...
func readlinkProgram(s *shell, p *vshell.Cmd, args []string) int {
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
	canon, mode := false, vfs.AllButLast
	last := 0 // the last of -f, -e, -m wins
	for _, m := range []struct {
		flag byte
		mode vfs.Mode
	}{{'f', vfs.AllButLast}, {'e', vfs.Existing}, {'m', vfs.Missing}} {
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
			p.Errorf("ignoring --no-newline with multiple arguments")
		} else {
			end = ""
		}
	}
	status := 0
	for _, f := range files {
		var out string
		var err error
		if canon {
			out, err = s.fs.Canonicalize(p.Abs(f), mode)
		} else {
			out, err = s.fs.Readlink(p.Abs(f))
		}
		if err != nil {
			if flags['v'] > 0 {
				p.Errorf("%s: %s", quoteIfNeeded(f), vfs.Strerror(err))
			}
			status = 1
			continue
		}
		fmt.Fprint(p.Stdout, out+end)
	}
	return status
}

// realpath [-e|-m] [-q] [-z] [--] FILE...
func realpathProgram(s *shell, p *vshell.Cmd, args []string) int {
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
	mode, last := vfs.AllButLast, 0 // the last of -E, -e, -m wins
	for _, m := range []struct {
		flag byte
		mode vfs.Mode
	}{{'E', vfs.AllButLast}, {'e', vfs.Existing}, {'m', vfs.Missing}} {
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
		out, err := s.fs.Canonicalize(p.Abs(f), mode)
		if err != nil {
			if flags['q'] == 0 {
				p.Errorf("%s: %s", quoteIfNeeded(f), vfs.Strerror(err))
			}
			status = 1
			continue
		}
		fmt.Fprint(p.Stdout, out+end)
	}
	return status
}
