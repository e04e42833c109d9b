package vshell

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pikaci/vmexec/testharness/vfs"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// program is one of the few programs a process may run. It returns its exit
// status. Messages follow busybox's.
type program func(s *stdio, args []string) int

var programs map[string]program

func init() {
	programs = map[string]program{
		"sleep":  sleepProgram,
		"cat":    catProgram,
		"kill":   killProgram,
		"mkdir":  mkdirProgram,
		"ln":     lnProgram,
		"ls":     lsProgram,
		"rm":     rmProgram,
		"touch":  touchProgram,
		"id":     idProgram,
		"env":    envProgram,
		"mkfifo": mkfifoProgram,
		"which":  whichProgram,
		"chmod":  chmodProgram,
		"chown":  chownProgram,
		"find":   findProgram,
	}
	programs[progLookup] = lookupProgram
	programs[progWait] = waitJobs
}

// Programs returns the names of the programs a process may run (beside the
// interpreter's builtins), sorted.
func Programs() []string {
	var names []string
	for n := range programs {
		if !strings.HasPrefix(n, "\x00") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// flags splits leading short options ("-pf", "-p -f") from operands.
func flags(s *stdio, args []string, allowed string) (map[byte]bool, []string, bool) {
	set := map[byte]bool{}
	for len(args) > 0 && len(args[0]) > 1 && args[0][0] == '-' {
		if args[0] == "--" {
			return set, args[1:], true
		}
		for _, c := range []byte(args[0][1:]) {
			if !strings.ContainsRune(allowed, rune(c)) {
				s.errorf("unrecognized option: %c", c)
				return nil, nil, false
			}
			set[c] = true
		}
		args = args[1:]
	}
	return set, args, true
}

// sleep N[smhd]...
func sleepProgram(s *stdio, args []string) int {
	if len(args) == 0 {
		s.errorf("missing operand")
		return 1
	}
	var total time.Duration
	for _, a := range args {
		unit := time.Second
		num := a
		switch {
		case strings.HasSuffix(a, "s"):
			num = a[:len(a)-1]
		case strings.HasSuffix(a, "m"):
			num, unit = a[:len(a)-1], time.Minute
		case strings.HasSuffix(a, "h"):
			num, unit = a[:len(a)-1], time.Hour
		case strings.HasSuffix(a, "d"):
			num, unit = a[:len(a)-1], 24*time.Hour
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 {
			s.errorf("invalid number '%s'", a)
			return 1
		}
		total += time.Duration(f * float64(unit))
	}
	return s.sleepFor(total)
}

// cat [FILE|-]...
func catProgram(s *stdio, args []string) int {
	_, files, ok := flags(s, args, "u")
	if !ok {
		return 1
	}
	if len(files) == 0 {
		files = []string{"-"}
	}
	status := 0
	for _, f := range files {
		var r io.Reader
		if f == "-" {
			if s.hc.Stdin == nil {
				continue
			}
			r = s.hc.Stdin
		} else {
			fh, err := s.p.cfg.FS.OpenFile(s.abs(f), os.O_RDONLY, 0)
			if err != nil {
				s.errorf("can't open '%s': %s", f, vfs.Strerror(err))
				status = 1
				continue
			}
			defer fh.Close()
			r = fh
		}
		if _, err := io.Copy(s.hc.Stdout, r); err != nil {
			s.errorf("%s: %s", f, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

// kill [-s SIG | -SIG] PID... ; $$ is this process, gN ($!) its
// background jobs.
func killProgram(s *stdio, args []string) int {
	sig := SIGTERM
	switch {
	case len(args) >= 2 && args[0] == "-s":
		n, ok := signalNumber(args[1])
		if !ok {
			s.errorf("bad signal name '%s'", args[1])
			return 1
		}
		sig, args = n, args[2:]
	case len(args) >= 1 && len(args[0]) > 1 && args[0][0] == '-' && args[0] != "--":
		n, ok := signalNumber(args[0][1:])
		if !ok {
			s.errorf("bad signal name '%s'", args[0][1:])
			return 1
		}
		sig, args = n, args[1:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		s.errorf("usage: kill [-s SIG] PID...")
		return 1
	}
	status := 0
	for _, a := range args {
		switch {
		case a == strconv.Itoa(os.Getpid()):
			s.p.Signal(sig)
		case strings.HasPrefix(a, "g"):
			if sig != 0 {
				s.p.killBackground()
			}
		default:
			s.errorf("can't kill pid %s: No such process", a)
			status = 1
		}
	}
	return status
}

// mkdir [-p] DIR...
func mkdirProgram(s *stdio, args []string) int {
	fl, dirs, ok := flags(s, args, "p")
	if !ok {
		return 1
	}
	if len(dirs) == 0 {
		s.errorf("missing operand")
		return 1
	}
	status := 0
	for _, d := range dirs {
		var err error
		if fl['p'] {
			err = mkdirAll(s.p.cfg.FS, s.abs(d))
		} else {
			err = s.p.cfg.FS.Mkdir(s.abs(d), 0o755)
		}
		if err != nil {
			s.errorf("can't create directory '%s': %s", d, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

func mkdirAll(fsys vfs.FS, p string) error {
	comps := strings.Split(p, "/")
	cur := ""
	for _, c := range comps {
		if c == "" {
			continue
		}
		cur += "/" + c
		fi, err := fsys.Stat(cur)
		if err == nil {
			if !fi.IsDir() {
				return &fs.PathError{Op: "mkdir", Path: cur, Err: errNotDir}
			}
			continue
		}
		if err := fsys.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

// ln -s [-f] TARGET LINK (hard links are not offered)
func lnProgram(s *stdio, args []string) int {
	fl, ops, ok := flags(s, args, "sfn")
	if !ok {
		return 1
	}
	if !fl['s'] {
		s.errorf("hard links are not available")
		return 1
	}
	if len(ops) != 2 {
		s.errorf("usage: ln -s [-f] TARGET LINK")
		return 1
	}
	link := s.abs(ops[1])
	if fi, err := s.p.cfg.FS.Stat(link); err == nil && fi.IsDir() && !fl['n'] {
		link = strings.TrimSuffix(link, "/") + "/" + path.Base(ops[0])
	}
	if fl['f'] {
		_ = s.p.cfg.FS.Remove(link)
	}
	if err := s.p.cfg.FS.Symlink(ops[0], link); err != nil {
		s.errorf("%s: %s", ops[1], vfs.Strerror(err))
		return 1
	}
	return 0
}

// ls [-a] [-1] [PATH]... : names, one a line, sorted.
func lsProgram(s *stdio, args []string) int {
	fl, ops, ok := flags(s, args, "a1l")
	if !ok {
		return 1
	}
	if len(ops) == 0 {
		ops = []string{"."}
	}
	status := 0
	for _, o := range ops {
		fi, err := s.p.cfg.FS.Stat(s.abs(o))
		if err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
			continue
		}
		if !fi.IsDir() {
			fmt.Fprintln(s.hc.Stdout, o)
			continue
		}
		ents, err := s.p.cfg.FS.ReadDir(s.abs(o))
		if err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
			continue
		}
		var names []string
		for _, e := range ents {
			if fl['a'] || !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintln(s.hc.Stdout, n)
		}
	}
	return status
}

// rm [-r] [-f] PATH...
func rmProgram(s *stdio, args []string) int {
	fl, ops, ok := flags(s, args, "rRf")
	if !ok {
		return 1
	}
	status := 0
	for _, o := range ops {
		err := removeAll(s.p.cfg.FS, s.abs(o), fl['r'] || fl['R'])
		if err != nil && !(fl['f'] && errors.Is(err, fs.ErrNotExist)) {
			s.errorf("can't remove '%s': %s", o, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

func removeAll(fsys vfs.FS, p string, recursive bool) error {
	fi, err := fsys.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if !recursive {
			return &fs.PathError{Op: "remove", Path: p, Err: errIsDir}
		}
		ents, err := fsys.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := removeAll(fsys, strings.TrimSuffix(p, "/")+"/"+e.Name(), true); err != nil {
				return err
			}
		}
	}
	return fsys.Remove(p)
}

// touch FILE...
func touchProgram(s *stdio, args []string) int {
	_, ops, ok := flags(s, args, "c")
	if !ok {
		return 1
	}
	status := 0
	for _, o := range ops {
		f, err := s.p.cfg.FS.OpenFile(s.abs(o), os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
			continue
		}
		f.Close()
	}
	return status
}

// id [-u|-g]
func idProgram(s *stdio, args []string) int {
	fl, _, ok := flags(s, args, "ugn")
	if !ok {
		return 1
	}
	switch {
	case fl['u']:
		fmt.Fprintln(s.hc.Stdout, s.p.cfg.UID)
	case fl['g']:
		fmt.Fprintln(s.hc.Stdout, s.p.cfg.GID)
	default:
		fmt.Fprintf(s.hc.Stdout, "uid=%d gid=%d\n", s.p.cfg.UID, s.p.cfg.GID)
	}
	return 0
}

// env: the exported environment, one KEY=VALUE a line, sorted.
func envProgram(s *stdio, args []string) int {
	if len(args) > 0 {
		s.errorf("only `env` without arguments is available")
		return 1
	}
	var lines []string
	s.hc.Env.Each(func(name string, vr expandVariable) bool {
		if vr.Exported && vr.IsSet() {
			lines = append(lines, name+"="+vr.String())
		}
		return true
	})
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Fprintln(s.hc.Stdout, l)
	}
	return 0
}

// mkfifo PATH...
func mkfifoProgram(s *stdio, args []string) int {
	mk, ok := s.p.cfg.FS.(vfs.FIFOer)
	if !ok {
		s.errorf("named pipes are not available here")
		return 1
	}
	status := 0
	for _, o := range args {
		if err := mk.Mkfifo(s.abs(o), 0o644); err != nil {
			s.errorf("cannot create fifo '%s': %s", o, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

// chmod MODE FILE... : MODE is octal (set-id and sticky bits included) or
// symbolic ([ugoa]*[+-=][rwxst]*, comma-separated).
func chmodProgram(s *stdio, args []string) int {
	at, ok := s.p.cfg.FS.(vfs.Attrer)
	if !ok {
		s.errorf("changing modes is not available here")
		return 1
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		s.errorf("missing operand")
		return 1
	}
	status := 0
	for _, o := range args[1:] {
		fi, err := s.p.cfg.FS.Stat(s.abs(o))
		if err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
			continue
		}
		mode, ok := parseMode(args[0], fi.Mode())
		if !ok {
			s.errorf("invalid mode '%s'", args[0])
			return 1
		}
		if err := at.Chmod(s.abs(o), mode); err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// parseMode applies a chmod MODE to the current mode; it returns the new
// permission, set-id and sticky bits.
func parseMode(spec string, cur fs.FileMode) (fs.FileMode, bool) {
	if n, err := strconv.ParseUint(spec, 8, 32); err == nil {
		if n > 0o7777 {
			return 0, false
		}
		m := fs.FileMode(n & 0o777)
		for bit, flag := range map[uint64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
			if n&bit != 0 {
				m |= flag
			}
		}
		return m, true
	}
	m := cur & modeBits
	for _, clause := range strings.Split(spec, ",") {
		i := strings.IndexAny(clause, "+-=")
		if i < 0 {
			return 0, false
		}
		who, rest := clause[:i], clause[i:]
		if who == "" {
			who = "a"
		}
		var mask fs.FileMode // the bits the who selects
		for _, c := range who {
			switch c {
			case 'u':
				mask |= 0o700 | fs.ModeSetuid
			case 'g':
				mask |= 0o070 | fs.ModeSetgid
			case 'o':
				mask |= 0o007 | fs.ModeSticky
			case 'a':
				mask |= 0o777 | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
			default:
				return 0, false
			}
		}
		for len(rest) > 0 {
			op := rest[0]
			j := 1
			for j < len(rest) && !strings.ContainsRune("+-=", rune(rest[j])) {
				j++
			}
			var bits fs.FileMode
			for _, c := range rest[1:j] {
				switch c {
				case 'r':
					bits |= 0o444
				case 'w':
					bits |= 0o222
				case 'x':
					bits |= 0o111
				case 's':
					bits |= fs.ModeSetuid | fs.ModeSetgid
				case 't':
					bits |= fs.ModeSticky
				default:
					return 0, false
				}
			}
			bits &= mask
			switch op {
			case '+':
				m |= bits
			case '-':
				m &^= bits
			case '=':
				m = m&^(mask&^(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)) | bits
			}
			rest = rest[j:]
		}
	}
	return m, true
}

// chown OWNER[:GROUP] FILE... : numeric ids, or names the guest's
// /etc/passwd and /etc/group know.
func chownProgram(s *stdio, args []string) int {
	at, ok := s.p.cfg.FS.(vfs.Attrer)
	if !ok {
		s.errorf("changing owners is not available here")
		return 1
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		s.errorf("missing operand")
		return 1
	}
	user, group, hasGroup := strings.Cut(args[0], ":")
	uid, gid := -1, -1
	if user != "" {
		if uid, ok = s.lookupID("/etc/passwd", user); !ok {
			s.errorf("unknown user %s", user)
			return 1
		}
	}
	if hasGroup && group != "" {
		if gid, ok = s.lookupID("/etc/group", group); !ok {
			s.errorf("unknown group %s", group)
			return 1
		}
	}
	status := 0
	for _, o := range args[1:] {
		if err := at.Chown(s.abs(o), uid, gid); err != nil {
			s.errorf("%s: %s", o, vfs.Strerror(err))
			status = 1
		}
	}
	return status
}

// lookupID returns a number as is, or the id of a name in a passwd or
// group file of the guest (name:x:id:...).
func (s *stdio) lookupID(file, name string) (int, bool) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, n >= 0
	}
	f, err := s.p.cfg.FS.OpenFile(file, os.O_RDONLY, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) >= 3 && fields[0] == name {
			n, err := strconv.Atoi(fields[2])
			return n, err == nil
		}
	}
	return 0, false
}

type expandVariable = expand.Variable

var (
	errNotDir = syscall.ENOTDIR
	errIsDir  = syscall.EISDIR
)

// where says where name is found: "" for a builtin or keyword (kind says
// which), /bin/NAME for a program, the path itself for an executable file
// in the guest.
func (s *stdio) where(name string) (kind, path string) {
	switch {
	case syntax.IsKeyword(name):
		return "keyword", ""
	case strings.Contains(name, "/"):
		fi, err := s.p.cfg.FS.Stat(s.abs(name))
		if err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0 {
			return "file", name
		}
		return "", ""
	case name == "kill" || programs[name] != nil && !strings.HasPrefix(name, "\x00"):
		return "file", "/bin/" + name
	case interp.IsBuiltin(name):
		return "builtin", ""
	}
	return "", ""
}

// lookupProgram is `command -v` and `type` over the guest.
func lookupProgram(s *stdio, args []string) int {
	mode, names := args[0], args[1:]
	status := 0
	for _, n := range names {
		kind, where := s.where(n)
		switch {
		case kind == "":
			status = 1
			if mode == "type" {
				fmt.Fprintf(s.hc.Stdout, "%s: not found\n", n)
			}
		case mode == "command-v" && where != "":
			fmt.Fprintln(s.hc.Stdout, where)
		case mode == "command-v":
			fmt.Fprintln(s.hc.Stdout, n)
		case kind == "keyword":
			fmt.Fprintf(s.hc.Stdout, "%s is a shell keyword\n", n)
		case kind == "builtin":
			fmt.Fprintf(s.hc.Stdout, "%s is a shell builtin\n", n)
		default:
			fmt.Fprintf(s.hc.Stdout, "%s is %s\n", n, where)
		}
	}
	return status
}

// which NAME...
func whichProgram(s *stdio, args []string) int {
	status := 0
	for _, n := range args {
		if kind, where := s.where(n); kind == "file" {
			fmt.Fprintln(s.hc.Stdout, where)
		} else {
			status = 1
		}
	}
	return status
}
