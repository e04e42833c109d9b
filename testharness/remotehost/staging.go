package remotehost

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/pikaci/vmexec/testharness/vfs"
	"github.com/pikaci/vmexec/testharness/vshell"
)

// The staging transfer of contract v2 needs three more programs on the remote:
// `tar -x` from standard input into a directory, `mv -T` to publish, and
// `rm -rf` to discard. Each takes only the forms the contract uses; any
// other option is refused as GNU would refuse an unknown one.
func init() {
	programs["tar"] = tarProgram
	programs["mv"] = mvProgram
	programs["rm"] = rmProgram
}

// tar -x [--no-same-owner] [--preserve-permissions|-p] -f - -C DIR
//
// It reads one archive from standard input and writes it inside DIR:
// directories, regular files with their permission bits (set-uid, set-gid
// and sticky dropped), symlinks verbatim. An entry whose name is absolute,
// has a ".." component, or lies below a symlink (one the archive made, say)
// is refused: nothing is written outside DIR. Hard links, devices and FIFOs
// are refused. Ownership is never restored: the remote has one user.
func tarProgram(s *shell, p *vshell.Cmd, args []string) int {
	usage := func(format string, a ...any) int {
		p.Errorf(format, a...)
		fmt.Fprintf(p.Stderr, "Try '%s --help' for more information.\n", p.Name)
		return 2
	}
	extract, file, dir := false, "", ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-x" || a == "--extract":
			extract = true
		case a == "--no-same-owner" || a == "--preserve-permissions" || a == "-p":
		case a == "-f" || a == "--file" || a == "-C" || a == "--directory":
			if i+1 == len(args) {
				return usage("option requires an argument -- '%s'", strings.TrimLeft(a, "-"))
			}
			i++
			if a == "-f" || a == "--file" {
				file = args[i]
			} else {
				dir = args[i]
			}
		case strings.HasPrefix(a, "--file="):
			file = strings.TrimPrefix(a, "--file=")
		case strings.HasPrefix(a, "--directory="):
			dir = strings.TrimPrefix(a, "--directory=")
		default:
			return usage("option %s is %s (only -x -f - -C DIR)", quote(a), NotAvailable)
		}
	}
	if !extract || file != "-" || dir == "" {
		return usage("only `tar -x -f - -C DIR` is %s", "available on the conformance remote")
	}
	root, err := s.fs.Canonicalize(p.Abs(dir), vfs.Existing)
	if err != nil || !s.fs.IsDir(root) {
		p.Errorf("%s: Cannot open: %s", dir, "No such file or directory")
		return 2
	}
	if p.Stdin == nil {
		p.Errorf("-: Cannot read: no standard input")
		return 2
	}
	tr := tar.NewReader(p.Stdin)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.Errorf("Unexpected EOF in archive (%v)", err)
			p.Errorf("Error is not recoverable: exiting now")
			return 2
		}
		if err := s.extract(root, h, tr); err != nil {
			p.Errorf("%s: %v", h.Name, err)
			p.Errorf("Exiting with failure status due to previous errors")
			return 2
		}
	}
	_, _ = io.Copy(io.Discard, p.Stdin) // GNU tar reads its input to the end
	return 0
}

// extract writes one archive entry below root.
func (s *shell) extract(root string, h *tar.Header, body io.Reader) error {
	name := strings.TrimPrefix(h.Name, "./")
	name = strings.TrimSuffix(name, "/")
	if name == "" || name == "." {
		return nil // the archive's root: DIR itself
	}
	if strings.HasPrefix(name, "/") {
		return fmt.Errorf("absolute member name refused")
	}
	comps := strings.Split(name, "/")
	for _, c := range comps {
		if c == ".." || c == "" {
			return fmt.Errorf("member name with a %q component refused", c)
		}
	}
	// Every parent must be a real directory below root: never a symlink.
	cur := root
	for _, c := range comps[:len(comps)-1] {
		cur = path.Join(cur, c)
		fi, err := s.fs.Lstat(cur)
		if err != nil {
			return fmt.Errorf("parent %s: %w", strings.TrimPrefix(cur, root+"/"), errors.Unwrap(err))
		}
		if !fi.IsDir() {
			return fmt.Errorf("refused: parent %s is not a directory (a symlink is not followed)", strings.TrimPrefix(cur, root+"/"))
		}
	}
	target := path.Join(root, name)
	perm := fs.FileMode(h.Mode).Perm()
	switch h.Typeflag {
	case tar.TypeDir:
		if err := s.fs.Mkdir(target, 0o700); err != nil {
			if fi, lerr := s.fs.Lstat(target); lerr != nil || !fi.IsDir() {
				return fmt.Errorf("cannot mkdir: %w", errors.Unwrap(err))
			}
		}
		return s.fs.Chmod(target, perm)
	case tar.TypeReg:
		f, err := s.fs.Create(target, perm)
		if err != nil {
			return fmt.Errorf("cannot open: %w", errors.Unwrap(err))
		}
		if _, err := io.Copy(f, body); err != nil {
			f.Close()
			return fmt.Errorf("cannot write: %w", err)
		}
		return f.Close()
	case tar.TypeSymlink:
		if err := s.fs.Symlink(h.Linkname, target); err != nil {
			return fmt.Errorf("cannot create symlink to %s: %w", quote(h.Linkname), errors.Unwrap(err))
		}
		return nil
	}
	return fmt.Errorf("member of type %q is refused on the conformance remote", string(h.Typeflag))
}

// mv -T [--] SOURCE DEST: rename(2), DEST never taken as a directory to
// move into.
func mvProgram(s *shell, p *vshell.Cmd, args []string) int {
	flags, ops, ok := options(p, args, "T", map[string]byte{"no-target-directory": 'T'})
	if !ok {
		return 1
	}
	if flags['T'] == 0 {
		p.Errorf("only `mv -T SOURCE DEST` is available on the conformance remote")
		return 1
	}
	if len(ops) != 2 {
		if len(ops) < 2 {
			return missingOperand(p)
		}
		p.Errorf("extra operand %s", quote(ops[2]))
		return 1
	}
	if err := s.fs.Rename(p.Abs(ops[0]), p.Abs(ops[1])); err != nil {
		p.Errorf("cannot move %s to %s: %s", quote(ops[0]), quote(ops[1]), vfs.Strerror(err))
		return 1
	}
	return 0
}

// rm [-r|-R] [-f] [--] FILE...
func rmProgram(s *shell, p *vshell.Cmd, args []string) int {
	flags, ops, ok := options(p, args, "rRf", map[string]byte{"recursive": 'r', "force": 'f'})
	if !ok {
		return 1
	}
	force, recursive := flags['f'] > 0, flags['r'] > 0 || flags['R'] > 0
	if len(ops) == 0 {
		if force {
			return 0
		}
		return missingOperand(p)
	}
	status := 0
	for _, op := range ops {
		target := p.Abs(op)
		fi, err := s.fs.Lstat(target)
		switch {
		case err != nil && errors.Is(err, fs.ErrNotExist):
			if !force {
				p.Errorf("cannot remove %s: No such file or directory", quote(op))
				status = 1
			}
			continue
		case err != nil:
			p.Errorf("cannot remove %s: %s", quote(op), vfs.Strerror(err))
			status = 1
			continue
		case fi.IsDir() && !recursive:
			p.Errorf("cannot remove %s: Is a directory", quote(op))
			status = 1
			continue
		}
		if err := s.fs.RemoveAll(target); err != nil {
			p.Errorf("cannot remove %s: %s", quote(op), vfs.Strerror(err))
			status = 1
		}
	}
	return status
}
