package remotehost

import (
	"path"
	"slices"

	"github.com/pikaci/vmexec/testharness/vfs"
	"github.com/pikaci/vmexec/testharness/vshell"
)

func init() {
	programs["find"] = findProgram
}

// findProgram is the one find a plugin runs to empty a directory in
// place: `find DIR -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +` (every
// entry of DIR removed, DIR kept). Any other use is refused.
func findProgram(s *shell, p *vshell.Cmd, args []string) int {
	want := []string{"-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "--", "{}", "+"}
	if len(args) != 1+len(want) || !slices.Equal(args[1:], want) {
		p.Errorf("only `find DIR -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +` is %s", NotAvailable[len("not "):])
		return 1
	}
	dir := p.Abs(args[0])
	ents, err := s.fs.ReadDir(dir)
	if err != nil {
		p.Errorf("%s: %s", quote(args[0]), vfs.Strerror(err))
		return 1
	}
	status := 0
	for _, e := range ents {
		if err := s.fs.RemoveAll(path.Join(dir, e.Name())); err != nil {
			p.Errorf("rm: cannot remove %s: %s", quote(path.Join(args[0], e.Name())), vfs.Strerror(err))
			status = 1
		}
	}
	return status
}
