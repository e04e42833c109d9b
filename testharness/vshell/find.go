package vshell

import (
	"fmt"
	"io/fs"
	"path"
	"slices"

	"github.com/pikaci/vmexec/testharness/vfs"
)

// find PATH [-type f|d|l|p|s|b|c] [-print|-print0]: the one form a plugin
// uses to list what it must not read (busybox's find takes more). It walks
// without following symlinks (the starting point's included, as find -P),
// in name order, and prints each path that matches.
func findProgram(s *stdio, args []string) int {
	if len(args) == 0 {
		s.errorf("missing operand")
		return 1
	}
	root, rest := args[0], args[1:]
	var typ byte
	sep := "\n"
	for len(rest) > 0 {
		switch {
		case rest[0] == "-type" && len(rest) > 1 && len(rest[1]) == 1 && slices.Contains([]byte("fdlpsbc"), rest[1][0]):
			typ, rest = rest[1][0], rest[2:]
		case rest[0] == "-print":
			sep, rest = "\n", rest[1:]
		case rest[0] == "-print0":
			sep, rest = "\x00", rest[1:]
		default:
			s.errorf("unrecognized: %s", rest[0])
			return 1
		}
	}
	status := 0
	var walk func(p string)
	walk = func(p string) {
		fi, err := s.p.cfg.FS.Lstat(s.abs(p))
		if err != nil {
			s.errorf("%s: %s", p, vfs.Strerror(err))
			status = 1
			return
		}
		if typ == 0 || typeLetter(fi.Mode()) == typ {
			fmt.Fprint(s.hc.Stdout, p+sep)
		}
		if !fi.IsDir() {
			return
		}
		ents, err := s.p.cfg.FS.ReadDir(s.abs(p))
		if err != nil {
			s.errorf("%s: %s", p, vfs.Strerror(err))
			status = 1
			return
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		for _, n := range names {
			walk(path.Join(p, n))
		}
	}
	walk(root)
	return status
}

// typeLetter is find's -type letter for a mode.
func typeLetter(m fs.FileMode) byte {
	switch {
	case m&fs.ModeSymlink != 0:
		return 'l'
	case m.IsDir():
		return 'd'
	case m&fs.ModeNamedPipe != 0:
		return 'p'
	case m&fs.ModeSocket != 0:
		return 's'
	case m&fs.ModeCharDevice != 0:
		return 'c'
	case m&fs.ModeDevice != 0:
		return 'b'
	}
	return 'f'
}
