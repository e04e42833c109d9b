package layout

import (
	"path"
	"strings"
	"unicode/utf8"

	"github.com/pikaci/vmexec/shared"
)

// CheckAbsClean checks that p is an absolute, clean path: no empty, "." or
// ".." component, no trailing slash, no NUL. Paths must also be valid UTF-8:
// the protocol carries them as protobuf strings, which cannot hold anything
// else.
func CheckAbsClean(field, p string) error { return shared.CheckAbsClean(field, p) }

// CheckComponent checks that v can be exactly one remote path component:
// not empty, not "." or "..", no "/", no NUL or other control character.
func CheckComponent(field, v string) error {
	switch v {
	case "":
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s is empty", field)
	case ".", "..":
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s %s is not a valid path component", field, shared.Show(v))
	}
	if !utf8.ValidString(v) {
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s %s is not valid UTF-8", field, shared.Show(v))
	}
	if strings.IndexByte(v, '/') >= 0 {
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s %s contains \"/\": it must be one path component", field, shared.Show(v))
	}
	if strings.IndexFunc(v, shared.IsControl) >= 0 {
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s %s contains a control character (C0, C1 or bidi formatting)", field, shared.Show(v))
	}
	if len(v) > MaxComponent {
		return shared.Errorf(shared.ErrInvalidInput, field, v, "%s %s is %d bytes long: a path component is at most %d bytes", field, shared.Show(v), len(v), MaxComponent)
	}
	return nil
}

// Limits of Linux file systems (docs/contract.md, "Validation").
const (
	MaxComponent = 255  // bytes in one path component (NAME_MAX)
	MaxPath      = 4095 // bytes in a path (PATH_MAX without its NUL)
)

// CheckLengths checks that no component of p is longer than MaxComponent
// and p is at most MaxPath bytes long. field names p in errors.
func CheckLengths(field, p string) error {
	if len(p) > MaxPath {
		return shared.Errorf(shared.ErrInvalidInput, field, p, "%s %s is %d bytes long: a path is at most %d bytes", field, shared.Show(p), len(p), MaxPath)
	}
	for _, c := range strings.Split(p, "/") {
		if len(c) > MaxComponent {
			return shared.Errorf(shared.ErrInvalidInput, field, p,
				"%s %s has a component of %d bytes: a path component is at most %d bytes", field, shared.Show(p), len(c), MaxComponent)
		}
	}
	return nil
}

// JobDirShape is the shape host.job_dir must have (docs/contract.md).
const JobDirShape = "<root>/<run id>/jobs/<job>"

// RunID returns the name of the job dir's grandparent, validated as one
// component. The job dir must already be absolute and clean, and shaped
// JobDirShape: a job dir whose parent is not named "jobs" is refused, as
// its grandparent would give a run id the runner never meant.
func RunID(jobDir string) (string, error) {
	grand := path.Dir(path.Dir(jobDir))
	if grand == "/" {
		return "", shared.Errorf(shared.ErrInvalidInput, "host.job_dir", jobDir,
			"host.job_dir %s has no run id: its grandparent is / (a job dir is shaped %s)", shared.Show(jobDir), JobDirShape)
	}
	if parent := path.Base(path.Dir(jobDir)); parent != "jobs" {
		return "", shared.Errorf(shared.ErrInvalidInput, "host.job_dir", jobDir,
			"host.job_dir %s is not shaped %s: its parent is %s, not \"jobs\", so it names no run id",
			shared.Show(jobDir), JobDirShape, shared.Show(parent))
	}
	run := path.Base(grand)
	if err := CheckComponent("run id", run); err != nil {
		return "", shared.Errorf(shared.ErrInvalidInput, "host.job_dir", jobDir,
			"host.job_dir %s: %w", shared.Show(jobDir), err)
	}
	return run, nil
}

// RelativeInside checks that dir is an absolute clean path strictly inside
// root, compared component by component, and returns it relative to root.
func RelativeInside(field, dir, root string) (string, error) {
	if err := CheckAbsClean(field, dir); err != nil {
		return "", err
	}
	prefix := root
	if root != "/" {
		prefix += "/"
	}
	if !strings.HasPrefix(dir, prefix) || len(dir) == len(prefix) {
		return "", shared.Errorf(shared.ErrInvalidInput, field, dir,
			"%s %s is not inside the job dir %s", field, shared.Show(dir), shared.Show(root))
	}
	return dir[len(prefix):], nil
}
