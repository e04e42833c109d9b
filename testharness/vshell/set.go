package vshell

import (
	"context"
	"fmt"
	"io"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// Set is the program set of a machine other than a guest (the virtual
// remote host's): the programs it offers beside the interpreter's
// builtins, and how its shell talks. Config.Set nil is a guest's set
// (Programs), with busybox's messages.
type Set struct {
	// Programs by name. An argv0 of one of Dirs followed by a name is
	// that name's program.
	Programs map[string]Program
	Dirs     []string
	// Shell is the shell's name in its own messages ("bash"); scripts are
	// parsed as bash, and a failed redirection is reported as the
	// interpreter words it.
	Shell string
	// NotFound prints what the shell says of a program that does not
	// exist (the status is 127).
	NotFound func(stderr io.Writer, name string)
	// Lookup answers `command -v NAME...` (mode "command-v") and
	// `type [-p|-P|-t] NAME...` (mode "type") and returns the status.
	Lookup Program
}

// Program is one program of a Set. It returns its exit status.
type Program func(c *Cmd, args []string) int

// Cmd is what a program of a Set gets: its name (for messages), the
// working directory, its standard streams and the machine's filesystem.
type Cmd struct {
	Ctx    context.Context
	Name   string
	Dir    string
	Stdin  io.Reader // nil: none
	Stdout io.Writer
	Stderr io.Writer
	FS     vfs.FS
}

// Errorf prints "NAME: message" on the program's stderr.
func (c *Cmd) Errorf(format string, args ...any) {
	fmt.Fprintf(c.Stderr, c.Name+": "+format+"\n", args...)
}

// Abs makes p absolute against the working directory, without cleaning.
func (c *Cmd) Abs(p string) string { return vfs.Abs(c.Dir, p) }

// runSet runs name (as the script wrote it, base without its directory)
// from the process's Set; ok is false when the set has no such program.
func (s *stdio) runSet(set *Set, name, base string, args []string) (status int, ok bool) {
	var prog Program
	switch name {
	case progLookup:
		prog = set.Lookup
	default:
		prog = set.Programs[base]
	}
	if prog == nil {
		return 0, false
	}
	c := &Cmd{Ctx: s.ctx, Name: base, Dir: s.hc.Dir, Stdin: s.hc.Stdin, Stdout: s.hc.Stdout, Stderr: s.hc.Stderr, FS: s.p.cfg.FS}
	return prog(c, args), true
}
