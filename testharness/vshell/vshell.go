// Package vshell is the harness's one shell: it runs commands in every
// virtual machine, a shell interpreter (mvdan.cc/sh) over a vfs.FS, with
// signals and one program set per machine. A guest's set is a few
// busybox-like programs (sleep, cat, kill, mkdir, ln, ls, rm, touch, id,
// env, mkfifo, which, chmod, chown, find; see Programs) under POSIX sh; the
// virtual remote host gives its own Set (Config.Set: bash, GNU-like
// programs and messages).
//
// A Process models what a CI job sees of a Linux process started by the
// Incus exec API:
//
//   - signals go to the main process only: TERM, INT and HUP end it with
//     128+signo unless a trap catches them (the interpreter's own trap knows
//     only EXIT and ERR; traps on signals are handled here), KILL always ends
//     it with 137;
//   - a trapped signal interrupts a running `sleep` (as if sleep were a
//     builtin) or `wait`, then the trap runs; otherwise it runs before the
//     next command;
//   - a background job (`cmd &`) keeps the process's output open after the
//     main process ends, until it finishes, even when the main process was
//     killed: a `sleep` in a background job is not ended by a signal to the
//     main process, only by the time passing or by Stop (the instance
//     stopping).
//
// Known simplifications: `wait gN` is not interrupted by a signal (the trap
// runs after it); a function defined outside a background statement and
// called from one counts as part of the main process; `kill gN` ($!)
// signals every background sleep; a background job that is not sleeping
// when the main process is killed ends with it.
package vshell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// Signal numbers the processes know, as on Linux x86_64.
const (
	SIGHUP  = 1
	SIGINT  = 2
	SIGQUIT = 3
	SIGKILL = 9
	SIGUSR1 = 10
	SIGUSR2 = 12
	SIGTERM = 15
)

var signalNames = map[string]int{
	"HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL,
	"USR1": SIGUSR1, "USR2": SIGUSR2, "TERM": SIGTERM,
}

// signalNumber parses "TERM", "SIGTERM" or "15".
func signalNumber(s string) (int, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, n >= 0 && n < 65
	}
	n, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return n, ok
}

// NotFound is what the shell prints after a program's name when no such
// program exists; the status is 127.
const NotFound = "not found"

// Config describes one process.
type Config struct {
	FS vfs.FS // the machine's filesystem, as the process sees it
	// Argv is run as is: ["sh", "-c", script, ...] (or bash, /bin/sh)
	// runs script; ["sh"] reads the script from Stdin; anything else is one
	// simple command (a program or a builtin).
	Argv []string
	// Env holds KEY=VALUE entries, the whole environment.
	Env []string
	// Dir is the working directory; it must exist.
	Dir      string
	UID, GID int
	Stdin    io.Reader // nil: no input
	Stdout   io.Writer // nil: discarded
	Stderr   io.Writer // nil: discarded
	// Set is the machine's program set; nil: a guest's (Programs).
	Set *Set
}

// Process is a running command. Its methods are safe for concurrent use.
type Process struct {
	cfg    Config
	file   *syntax.File
	runner *interp.Runner

	mainCtx    context.Context
	cancelMain context.CancelFunc
	stopAll    chan struct{} // closed by Stop
	stopOnce   sync.Once
	exited     chan struct{} // closed when the main process ends
	finished   chan struct{} // closed when it and every background job ended
	stdinR     *os.File
	stdinW     *os.File

	mu        sync.Mutex
	status    int
	dead      bool
	traps     map[int]string // signal → action ("" ignores); absent: default
	pending   int            // a trapped signal not yet handled
	forced    int            // -1, or the status a trap exited with
	intr      chan struct{}  // interrupts a foreground sleep
	bgRanges  [][2]uint      // offsets of background statements, by id
	bgCount   map[int]int    // background jobs running, by statement id
	bgSleep   map[int]int    // of which sleeping
	bgKill    chan struct{}  // closed to end every background sleep (kill gN)
	bgChanged chan struct{}  // closed (and replaced) when bgCount may have changed
	mainDone  bool
}

// Start parses cfg.Argv and starts the process. Cancelling ctx stops it as
// Stop does. A parse error is returned (the shell would print it and exit
// 2).
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if cfg.FS == nil || len(cfg.Argv) == 0 {
		return nil, errors.New("vshell: a process needs a filesystem and an argv")
	}
	p := &Process{
		cfg:       cfg,
		stopAll:   make(chan struct{}),
		exited:    make(chan struct{}),
		finished:  make(chan struct{}),
		traps:     map[int]string{},
		forced:    -1,
		intr:      make(chan struct{}, 1),
		bgCount:   map[int]int{},
		bgSleep:   map[int]int{},
		bgKill:    make(chan struct{}),
		bgChanged: make(chan struct{}),
	}
	if p.cfg.Stdout == nil {
		p.cfg.Stdout = io.Discard
	}
	if p.cfg.Stderr == nil {
		p.cfg.Stderr = io.Discard
	}
	var script, name string
	var params []string
	var err error
	if strings.Contains(cfg.Argv[0], "/") && !isShell(cfg.Argv[0]) {
		script, err = readScript(cfg.FS, cfg.Argv[0], cfg.Dir)
		params, name = cfg.Argv[1:], cfg.Argv[0]
	} else {
		script, params, err = scriptOf(cfg.Argv, cfg.Stdin)
		name = "sh" // $0
		if cfg.Set != nil {
			name = "" // bash names no script in its syntax errors
		}
		if isShell(cfg.Argv[0]) && len(cfg.Argv) > 3 && cfg.Argv[1] == "-c" {
			name = cfg.Argv[3]
		}
	}
	if err != nil {
		return nil, err
	}
	p.file, err = syntax.NewParser(syntax.Variant(p.lang())).Parse(strings.NewReader(script), name)
	if err != nil {
		return nil, fmt.Errorf("vshell: %s: %w", p.shell(), err)
	}
	p.markBackground()

	// The interpreter wants an *os.File as stdin; a pipe fed from cfg.Stdin
	// lets a kill unblock a read by closing it.
	if cfg.Stdin != nil && len(cfg.Argv) > 1 || cfg.Stdin != nil && !isShell(cfg.Argv[0]) {
		p.stdinR, p.stdinW, err = os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("vshell: stdin pipe: %w", err)
		}
		go func() {
			_, _ = io.Copy(p.stdinW, cfg.Stdin)
			p.stdinW.Close()
		}()
	}
	var stdin io.Reader
	if p.stdinR != nil {
		stdin = p.stdinR
	}
	opts := []interp.RunnerOption{
		interp.Env(expand.ListEnviron(cfg.Env...)),
		// interp.Dir would stat this machine's directory; the guest's is
		// set below, once the runner exists.
		interp.Dir("/"),
		interp.StdIO(stdin, p.cfg.Stdout, p.cfg.Stderr),
		interp.CallHandler(p.call),
		interp.ExecHandlers(func(interp.ExecHandlerFunc) interp.ExecHandlerFunc { return p.exec }),
		interp.OpenHandler(p.open),
		interp.ReadDirHandler2(p.readDir),
		interp.StatHandler(p.stat),
		interp.AccessHandler(p.access),
	}
	if params != nil {
		opts = append(opts, interp.Params(append([]string{"--"}, params...)...))
	}
	if !slices.ContainsFunc(cfg.Env, func(kv string) bool { return strings.HasPrefix(kv, "HOME=") }) {
		// Unset, the interpreter would take this machine's home.
		opts = append(opts, interp.Env(expand.ListEnviron(append(slices.Clone(cfg.Env), "HOME=")...)))
	}
	p.runner, err = interp.New(opts...)
	if err != nil {
		p.closeStdin()
		return nil, fmt.Errorf("vshell: %w", err)
	}
	if cfg.Dir != "" {
		p.runner.Dir = cfg.Dir // the first Reset keeps it
	}
	p.mainCtx, p.cancelMain = context.WithCancel(context.Background())
	go func() {
		select {
		case <-ctx.Done():
			p.Stop()
		case <-p.finished:
		}
	}()
	go p.run()
	return p, nil
}

// lang is the language scripts are parsed as: bash for a Set's shell,
// POSIX sh for a guest's.
func (p *Process) lang() syntax.LangVariant {
	if p.cfg.Set != nil {
		return syntax.LangBash
	}
	return syntax.LangPOSIX
}

// shell is the shell's name in its messages.
func (p *Process) shell() string {
	if p.cfg.Set != nil && p.cfg.Set.Shell != "" {
		return p.cfg.Set.Shell
	}
	return "sh"
}

// dirs are the directories an argv0 may name a program in.
func (p *Process) dirs() []string {
	if p.cfg.Set != nil {
		return p.cfg.Set.Dirs
	}
	return []string{"/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/"}
}

func isShell(name string) bool {
	switch name {
	case "sh", "/bin/sh", "bash", "/bin/bash", "ash", "/bin/ash":
		return true
	}
	return false
}

// scriptOf turns argv into a script and its positional parameters ($0
// dropped; nil: none given).
func scriptOf(argv []string, stdin io.Reader) (string, []string, error) {
	if isShell(argv[0]) {
		switch {
		case len(argv) >= 3 && argv[1] == "-c":
			var params []string
			if len(argv) > 4 {
				params = argv[4:]
			}
			return argv[2], params, nil
		case len(argv) == 2 && argv[1] == "-c":
			return "", nil, fmt.Errorf("vshell: %s: -c requires an argument", argv[0])
		case len(argv) == 1 || len(argv) == 2 && argv[1] == "-s":
			if stdin == nil {
				return "", nil, nil
			}
			data, err := io.ReadAll(stdin)
			if err != nil {
				return "", nil, fmt.Errorf("vshell: read the script from stdin: %w", err)
			}
			return string(data), nil, nil
		}
	}
	words := make([]string, len(argv))
	for i, a := range argv {
		q, err := syntax.Quote(a, syntax.LangBash)
		if err != nil {
			return "", nil, fmt.Errorf("vshell: argument %d %q: %w", i, a, err)
		}
		words[i] = q
	}
	return strings.Join(words, " "), nil, nil
}

// Internal program names: no script can call them, they hold a NUL byte.
const (
	progBgBegin = "\x00bg-begin"
	progBgEnd   = "\x00bg-end"
	progKill    = "\x00kill"
	progLookup  = "\x00lookup"
	progWait    = "\x00wait"
)

func lit(s string) *syntax.Word { return &syntax.Word{Parts: []syntax.WordPart{&syntax.Lit{Value: s}}} }

func callStmt(args ...string) *syntax.Stmt {
	c := &syntax.CallExpr{}
	for _, a := range args {
		c.Args = append(c.Args, lit(a))
	}
	return &syntax.Stmt{Cmd: c}
}

// markBackground rewrites every background statement `cmd &` into
// `bg-begin id; { (cmd); bg-end id; } &` so the process knows which jobs
// still hold its output, and records where each one's source is.
func (p *Process) markBackground() {
	rewrite := func(stmts []*syntax.Stmt) []*syntax.Stmt {
		var out []*syntax.Stmt
		for _, st := range stmts {
			if !st.Background {
				out = append(out, st)
				continue
			}
			id := len(p.bgRanges)
			p.bgRanges = append(p.bgRanges, [2]uint{st.Pos().Offset(), st.End().Offset()})
			inner := *st
			inner.Background = false
			wrapped := &syntax.Stmt{Cmd: &syntax.Block{Stmts: []*syntax.Stmt{
				{Cmd: &syntax.Subshell{Stmts: []*syntax.Stmt{&inner}}},
				callStmt(progBgEnd, strconv.Itoa(id)),
			}}, Background: true}
			out = append(out, callStmt(progBgBegin, strconv.Itoa(id)), wrapped)
		}
		return out
	}
	syntax.Walk(p.file, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.File:
			n.Stmts = rewrite(n.Stmts)
		case *syntax.Block:
			n.Stmts = rewrite(n.Stmts)
		case *syntax.Subshell:
			n.Stmts = rewrite(n.Stmts)
		case *syntax.IfClause:
			n.Cond, n.Then = rewrite(n.Cond), rewrite(n.Then)
		case *syntax.WhileClause:
			n.Cond, n.Do = rewrite(n.Cond), rewrite(n.Do)
		case *syntax.ForClause:
			n.Do = rewrite(n.Do)
		case *syntax.CaseItem:
			n.Stmts = rewrite(n.Stmts)
		case *syntax.BinaryCmd:
			// `a && b &` is one background statement; nothing inside.
		}
		return true
	})
}

// bgID returns the background statement pos is in, or -1.
func (p *Process) bgID(pos syntax.Pos) int {
	if !pos.IsValid() {
		return -1
	}
	off := pos.Offset()
	best := -1
	for id, r := range p.bgRanges {
		if off >= r[0] && off < r[1] && (best < 0 || r[0] >= p.bgRanges[best][0]) {
			best = id
		}
	}
	return best
}

func (p *Process) run() {
	err := p.runner.Run(p.mainCtx, p.file)
	status := 0
	var es interp.ExitStatus
	switch {
	case err == nil:
	case errors.As(err, &es):
		status = int(es)
	case p.mainCtx.Err() != nil:
		status = 137 // replaced by the signal's status below
	default:
		fmt.Fprintf(p.cfg.Stderr, "%s: %v\n", p.shell(), err)
		status = 2
	}
	if p.takePending() != 0 && !p.isDead() {
		if st, exited := p.runTrap(p.mainCtx, p.runner); exited {
			status = st
		}
	}
	p.mu.Lock()
	if p.forced >= 0 {
		status = p.forced
	}
	p.mu.Unlock()
	p.die(status, false)
	p.mu.Lock()
	p.mainDone = true
	p.mu.Unlock()
	p.maybeFinish()
}

func (p *Process) isDead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead
}

// die ends the main process with status unless it has ended already.
// killed says a signal ended it: the interpreter must stop where it is.
func (p *Process) die(status int, killed bool) {
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return
	}
	p.dead, p.status = true, status
	if killed {
		// Jobs that are not sleeping stop at their next statement once the
		// main context is cancelled; only sleeping ones keep the output
		// open.
		for id := range p.bgCount {
			p.bgCount[id] = p.bgSleep[id]
		}
	}
	p.mu.Unlock()
	if killed {
		p.cancelMain()
	}
	close(p.exited)
	p.closeStdin()
	p.maybeFinish()
}

func (p *Process) closeStdin() {
	if p.stdinR != nil {
		p.stdinR.Close()
	}
}

func (p *Process) maybeFinish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.bgChanged)
	p.bgChanged = make(chan struct{})
	if !p.mainDone || !p.dead {
		return
	}
	for _, n := range p.bgCount {
		if n > 0 {
			return
		}
	}
	select {
	case <-p.finished:
	default:
		close(p.finished)
		p.cancelMain()
	}
}

// Exited is closed when the main process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Done is closed when the main process and every background job have
// ended: the process's output is complete.
func (p *Process) Done() <-chan struct{} { return p.finished }

// ExitStatus is the main process's status (128+signo when a signal ended
// it); valid once Exited is closed.
func (p *Process) ExitStatus() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Signal delivers signal sig to the main process. Unknown signals and
// signals to an ended process are ignored.
func (p *Process) Signal(sig int) {
	p.mu.Lock()
	if p.dead || sig == 0 {
		p.mu.Unlock()
		return
	}
	action, trapped := p.traps[sig]
	if sig == SIGKILL {
		trapped = false
	}
	switch {
	case trapped && action == "":
		p.mu.Unlock() // ignored
		return
	case trapped:
		p.pending = sig
		p.mu.Unlock()
		select {
		case p.intr <- struct{}{}:
		default:
		}
		return
	}
	p.mu.Unlock()
	switch sig {
	case SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM:
		p.die(128+sig, true)
	}
}

// Stop ends everything, as stopping the instance does: the main process
// gets SIGKILL and every background job ends.
func (p *Process) Stop() {
	p.die(128+SIGKILL, true)
	p.mu.Lock()
	for id := range p.bgCount { // jobs of a main process that ended before
		p.bgCount[id] = p.bgSleep[id]
	}
	p.mu.Unlock()
	p.cancelMain()
	p.stopOnce.Do(func() { close(p.stopAll) })
	p.maybeFinish()
}

func (p *Process) takePending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	sig := p.pending
	p.pending = 0
	select {
	case <-p.intr:
	default:
	}
	return sig
}

// runTrap runs the action for a pending signal in a copy of r. It reports
// the status when the action exited the shell.
func (p *Process) runTrap(ctx context.Context, r *interp.Runner) (int, bool) {
	p.mu.Lock()
	var action string
	for sig, a := range p.traps {
		if a != "" && sig != 0 {
			action = a
			break
		}
	}
	p.mu.Unlock()
	return p.runAction(ctx, r, action)
}

func (p *Process) runAction(ctx context.Context, r *interp.Runner, action string) (int, bool) {
	if action == "" {
		return 0, false
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangPOSIX)).Parse(strings.NewReader(action), "trap")
	if err != nil {
		fmt.Fprintf(p.cfg.Stderr, "sh: trap: %v\n", err)
		return 0, false
	}
	r2 := r.Subshell()
	err = r2.Run(ctx, f)
	if !r2.Exited() {
		return 0, false
	}
	status := 0
	var es interp.ExitStatus
	if errors.As(err, &es) {
		status = int(es)
	}
	p.mu.Lock()
	p.forced = status
	p.mu.Unlock()
	return status, true
}

// call runs before every simple command: it handles a pending trap, makes
// a trap's exit end the shell, and keeps signal traps from the interpreter.
func (p *Process) call(ctx context.Context, args []string) ([]string, error) {
	hc := interp.HandlerCtx(ctx)
	if strings.HasPrefix(args[0], "\x00") {
		return args, nil // bg-begin/bg-end: bookkeeping, not the job's
	}
	if p.bgID(hc.Pos) < 0 {
		if sig := p.takePending(); sig != 0 {
			p.pendingAction(ctx, sig)
		}
		p.mu.Lock()
		forced := p.forced
		p.mu.Unlock()
		if forced >= 0 {
			return []string{"exit", strconv.Itoa(forced)}, nil
		}
	}
	switch args[0] {
	case "trap":
		return p.trap(args)
	case "kill":
		// The interpreter lists kill as a builtin; ours is the program,
		// which knows this process's signals.
		return append([]string{progKill}, args[1:]...), nil
	case "wait":
		if len(args) == 1 && p.bgID(hc.Pos) < 0 {
			// Ours, so that a trapped signal interrupts it as in sh.
			return []string{progWait}, nil
		}
	case "command", "type":
		// The interpreter would search this machine's PATH; the guest's
		// lookup answers instead.
		if args[0] == "type" {
			return append([]string{progLookup, "type"}, args[1:]...), nil
		}
		if len(args) > 1 && args[1] == "-v" {
			return append([]string{progLookup, "command-v"}, args[2:]...), nil
		}
	}
	return args, nil
}

func (p *Process) pendingAction(ctx context.Context, sig int) {
	p.mu.Lock()
	action := p.traps[sig]
	p.mu.Unlock()
	p.runAction(ctx, p.runner, action)
}

// trap records traps on signals and leaves EXIT and ERR to the interpreter.
func (p *Process) trap(args []string) ([]string, error) {
	rest := args[1:]
	if len(rest) == 0 || strings.HasPrefix(rest[0], "-") && rest[0] != "-" {
		return args, nil
	}
	action, sigs := "-", rest
	if len(rest) > 1 {
		action, sigs = rest[0], rest[1:]
	}
	keep := []string{"trap", action}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range sigs {
		switch strings.ToUpper(s) {
		case "EXIT", "0", "ERR":
			if s == "0" {
				s = "EXIT"
			}
			keep = append(keep, s)
			continue
		}
		n, ok := signalNumber(s)
		if !ok {
			return []string{"false"}, nil
		}
		if action == "-" {
			delete(p.traps, n)
		} else {
			p.traps[n] = action
		}
	}
	if len(keep) == 2 {
		return []string{"true"}, nil
	}
	return keep, nil
}

func (p *Process) exec(ctx context.Context, args []string) error {
	hc := interp.HandlerCtx(ctx)
	name := args[0]
	base := name
	for _, dir := range p.dirs() {
		if rest, ok := strings.CutPrefix(name, dir); ok && !strings.Contains(rest, "/") {
			base = rest
		}
	}
	switch name {
	case progBgBegin, progBgEnd:
		id, _ := strconv.Atoi(args[1])
		p.mu.Lock()
		if name == progBgBegin {
			p.bgCount[id]++
		} else if p.bgCount[id] > 0 {
			p.bgCount[id]--
		}
		p.mu.Unlock()
		p.maybeFinish()
		return nil
	}
	switch name {
	case progKill:
		base = "kill"
	case progLookup, progWait:
		base = name
	}
	io := &stdio{ctx: ctx, hc: hc, p: p, name: base, bg: p.bgID(hc.Pos)}
	var status int
	if set := p.cfg.Set; set != nil && name != progKill && name != progWait {
		// A Set's own programs; kill and wait stay the process's.
		var ok bool
		if status, ok = io.runSet(set, name, base, args[1:]); !ok {
			set.NotFound(hc.Stderr, name)
			return interp.ExitStatus(127)
		}
	} else {
		prog, ok := programs[base]
		if !ok {
			fmt.Fprintf(hc.Stderr, "sh: %s: %s\n", name, NotFound)
			return interp.ExitStatus(127)
		}
		status = prog(io, args[1:])
	}
	if status != 0 {
		return interp.ExitStatus(uint8(status))
	}
	return nil
}

// stdio is what a program gets.
type stdio struct {
	ctx  context.Context
	hc   interp.HandlerContext
	p    *Process
	name string
	bg   int // background statement id, -1 in the main process
}

func (s *stdio) errorf(format string, args ...any) {
	fmt.Fprintf(s.hc.Stderr, s.name+": "+format+"\n", args...)
}

func (s *stdio) abs(p string) string { return vfs.Abs(s.hc.Dir, p) }

// errnoText is an errno printed as the C library does, so a failed
// redirection reads as busybox sh prints it:
// "sh: can't create /ro/x: Read-only file system". (The interpreter only
// treats an *fs.PathError from the open handler as a non-fatal failure.)
type errnoText struct{ err error }

func (e errnoText) Error() string { return vfs.Strerror(e.err) }
func (e errnoText) Unwrap() error { return e.err }

type devNull struct{}

func (devNull) Read([]byte) (int, error)    { return 0, io.EOF }
func (devNull) Write(b []byte) (int, error) { return len(b), nil }
func (devNull) Close() error                { return nil }

func (p *Process) open(ctx context.Context, path string, flag int, perm os.FileMode) (io.ReadWriteCloser, error) {
	if path == "/dev/null" {
		return devNull{}, nil
	}
	f, err := p.cfg.FS.OpenFile(vfs.Abs(interp.HandlerCtx(ctx).Dir, path), flag, perm)
	if err != nil && p.cfg.Set != nil {
		return nil, err // an *fs.PathError: the interpreter prints it, status 1
	}
	if err != nil {
		verb := "open"
		if flag&os.O_CREATE != 0 {
			verb = "create"
		}
		return nil, &fs.PathError{Op: "sh: can't " + verb, Path: path, Err: errnoText{err}}
	}
	return f, nil
}

func (p *Process) readDir(ctx context.Context, path string) ([]fs.DirEntry, error) {
	return p.cfg.FS.ReadDir(vfs.Abs(interp.HandlerCtx(ctx).Dir, path))
}

func (p *Process) stat(ctx context.Context, name string, follow bool) (fs.FileInfo, error) {
	name = vfs.Abs(interp.HandlerCtx(ctx).Dir, name)
	if follow {
		return p.cfg.FS.Stat(name)
	}
	return p.cfg.FS.Lstat(name)
}

// access: the process may read and write everything (the filesystem
// refuses writes it cannot take); executing needs an x bit on a file.
func (p *Process) access(ctx context.Context, path string, mode interp.AccessMode) error {
	fi, err := p.cfg.FS.Stat(vfs.Abs(interp.HandlerCtx(ctx).Dir, path))
	if err != nil {
		return err
	}
	if mode&interp.AccessExec != 0 && !fi.IsDir() && fi.Mode().Perm()&0o111 == 0 {
		return &fs.PathError{Op: "access", Path: path, Err: syscall.EACCES}
	}
	return nil
}

// sleepFor waits d in the foreground (interrupted by a trapped signal or
// the main process ending) or in a background job (ended only by the time
// passing, kill gN or Stop).
func (s *stdio) sleepFor(d time.Duration) int {
	t := time.NewTimer(d)
	defer t.Stop()
	p := s.p
	if s.bg < 0 {
		select {
		case <-t.C:
			return 0
		case <-s.ctx.Done():
			return 128 + SIGKILL
		case <-p.intr:
			if sig := p.takePending(); sig != 0 {
				p.pendingAction(s.ctx, sig)
				return 128 + sig
			}
			return 0
		}
	}
	if p.mainCtx.Err() != nil {
		return 128 + SIGKILL // the job's shell is gone
	}
	p.mu.Lock()
	p.bgSleep[s.bg]++
	kill := p.bgKill
	p.mu.Unlock()
	status := 0
	select {
	case <-t.C:
	case <-kill:
		status = 128 + SIGTERM
	case <-p.stopAll:
		status = 128 + SIGKILL
	}
	p.mu.Lock()
	p.bgSleep[s.bg]--
	if p.mainCtx.Err() != nil && p.bgCount[s.bg] > 0 {
		// The main process is gone: this job's shell stops here.
		p.bgCount[s.bg]--
	}
	p.mu.Unlock()
	p.maybeFinish()
	return status
}

// killBackground ends every background sleep.
func (p *Process) killBackground() {
	p.mu.Lock()
	close(p.bgKill)
	p.bgKill = make(chan struct{})
	p.mu.Unlock()
}

// Errors of Start for an argv[0] that is a path, as execve(2) fails.
var (
	ErrNotFound      = errors.New("vshell: no such file")   // the exit status is 127
	ErrNotExecutable = errors.New("vshell: not executable") // the exit status is 126
)

// readScript reads the script argv0 names: an executable file starting
// with #! naming a shell (the only interpreter there is).
func readScript(fsys vfs.FS, argv0, dir string) (string, error) {
	p := vfs.Abs(dir, argv0)
	fi, err := fsys.Stat(p)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %s: %v", ErrNotFound, argv0, err)
	case fi.IsDir() || fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("%w: %s", ErrNotExecutable, argv0)
	}
	f, err := fsys.OpenFile(p, os.O_RDONLY, 0)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNotExecutable, argv0, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNotExecutable, argv0, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	if interp, ok := strings.CutPrefix(line, "#!"); ok {
		if fields := strings.Fields(interp); len(fields) == 0 || !isShell(fields[0]) {
			return "", fmt.Errorf("%w: %s: interpreter %q is not available", ErrNotFound, argv0, interp)
		}
	}
	return string(data), nil
}

// waitJobs is `wait` without operands in the main process: it returns
// when every background job has ended, or earlier when a trapped signal
// comes (after running the trap, as sh does).
func waitJobs(s *stdio, _ []string) int {
	p := s.p
	for {
		p.mu.Lock()
		n := 0
		for _, c := range p.bgCount {
			n += c
		}
		changed := p.bgChanged
		p.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return 128 + SIGKILL
		case <-p.intr:
			if sig := p.takePending(); sig != 0 {
				p.pendingAction(s.ctx, sig)
				return 128 + sig
			}
		}
	}
}

// Known reports whether argv0 names something a process can run: a shell,
// one of the programs, or a builtin of the interpreter. (A path with a
// slash is looked up in the filesystem by Start.)
func Known(argv0 string) bool {
	if isShell(argv0) || interp.IsBuiltin(argv0) {
		return true
	}
	base := argv0
	for _, dir := range []string{"/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/"} {
		if rest, ok := strings.CutPrefix(argv0, dir); ok && !strings.Contains(rest, "/") {
			base = rest
		}
	}
	_, ok := programs[base]
	return ok
}
