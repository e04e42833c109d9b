// Package host loads executor plugins for a CI runner: it finds them in a
// directory, starts each over go-plugin's gRPC transport with mutual TLS,
// negotiates the protocol version, checks the binary's SHA-256 when the
// operator pinned one, and hands out each plugin as a shared.Executor that
// survives a crash of its process.
//
// RunWholeJob (wholejob.go) runs a whole job (contract version 2) on a
// shared.JobExecutor: prepare the directories, stage, prepare the runtime,
// run, collect, and Cleanup whenever PrepareRuntime was reached. It writes the run record (Record:
// phases with their times and errors, the exit code, the cleanup) to
// <host.job_dir>/pikaci-execution.json (RecordFile), also when the job
// failed.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// Prefix starts the file name of every plugin binary; the plugin's name is
// the rest (executor-remote-linux-vm is the plugin remote-linux-vm).
const Prefix = "executor-"

// DefaultStartTimeout bounds a plugin's start: exec, go-plugin's handshake,
// Describe and Configure. Our plugin is ready in well under a second (about
// 60 ms); the bound leaves room for a cold disk cache and a loaded machine,
// and still ends a plugin that never handshakes (one that hangs, or whose
// child holds its stdout) within a CI job's patience. When it passes, or
// the caller's context ends first, the plugin's whole process group is
// killed.
const DefaultStartTimeout = 30 * time.Second

// Options say where plugins are and how to start them.
type Options struct {
	// PluginDir holds the plugin binaries: Load starts every one,
	// Dispense the one it names.
	PluginDir string
	// RequireSHA256 pins plugins by name to the hex SHA-256 of their binary.
	// A plugin whose binary differs is refused; a pinned plugin that is
	// missing is an error. Unpinned plugins load as they are, and a restart
	// after a crash only ever runs the binary that was loaded first.
	RequireSHA256 map[string]string
	// Settings are passed to every plugin once it has started (and again
	// after a restart).
	Settings shared.Settings
	// Logger receives the host's messages about plugins and the plugins'
	// own log lines, at their levels. Nil: hclog's default logger.
	Logger hclog.Logger
	// StartTimeout bounds each plugin start, from exec to configured (the
	// context given to Load or Dispense bounds it too). Negative: refused.
	// Zero:
	// DefaultStartTimeout.
	StartTimeout time.Duration

	// versions are the protocol versions the host speaks; nil:
	// shared.VersionedPlugins. Tests set it to prove negotiation.
	versions map[int]plugin.PluginSet
}

// Binary is a plugin binary found in a directory.
type Binary struct {
	Name string // e.g. remote-linux-vm
	Path string // e.g. /usr/lib/runner/executor-remote-linux-vm
}

// Discover lists the plugin binaries in dir: executable regular files (or
// symlinks to them) whose name is Prefix followed by a name CheckName
// accepts, sorted by name.
func Discover(dir string) ([]Binary, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, shared.Errorf(kindOfFSError(err), "plugin_dir", dir, "read plugin dir %s: %w", dir, err)
	}
	var bins []Binary
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), Prefix)
		if !ok || CheckName(name) != nil {
			// Not a name a plugin can have (empty, or holding a control
			// character that would garble a listing): not a plugin.
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		bins = append(bins, Binary{Name: name, Path: path})
	}
	return bins, nil
}

// CheckName refuses a plugin name that is not exactly one path component
// usable in a file name executor-NAME: empty, ".", "..", holding a "/" or a
// NUL, control or bidirectional formatting character, or invalid UTF-8.
// The error names the value.
func CheckName(name string) error {
	why := ""
	switch {
	case name == "":
		why = "it is empty"
	case name == "." || name == "..":
		why = "it is not a file name"
	case strings.ContainsRune(name, '/'):
		why = "it holds a /: a plugin name is one file name in the plugin dir"
	case !utf8.ValidString(name):
		why = "it is not valid UTF-8"
	case strings.ContainsFunc(name, unsafeRune):
		why = "it holds a control or bidirectional formatting character"
	case len(Prefix)+len(name) > 255:
		why = "the file name " + Prefix + "NAME would be longer than 255 bytes"
	}
	if why != "" {
		return shared.Errorf(shared.ErrInvalidInput, "plugin", name, "plugin name %s: %s", shared.Show(name), why)
	}
	return nil
}

// unsafeRune is a rune a plugin name may not hold: C0 and C1 controls
// (NUL included) and Unicode's bidirectional formatting characters.
func unsafeRune(r rune) bool {
	switch {
	case unicode.IsControl(r):
		return true
	case r == '\u200e', r == '\u200f', r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

// Lookup finds the plugin called name in dir: the executable regular file
// (or symlink to one, as Discover lists them) dir/executor-NAME. The name
// must pass CheckName, so the binary is always in dir.
func Lookup(dir, name string) (Binary, error) {
	if err := CheckName(name); err != nil {
		return Binary{}, err
	}
	path := filepath.Join(dir, Prefix+name)
	fi, err := os.Stat(path)
	if err != nil {
		return Binary{}, shared.Errorf(kindOfFSError(err), "plugin", name, "plugin %s: %w", shared.Show(name), err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return Binary{}, shared.Errorf(shared.ErrInvalidInput, "plugin", name,
			"plugin %s: %s is not an executable regular file (%v)", shared.Show(name), path, fi.Mode())
	}
	return Binary{Name: name, Path: path}, nil
}

func kindOfFSError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return shared.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return shared.ErrPermission
	}
	return shared.ErrUnavailable
}

// Registry is the set of plugins a runner loaded.
type Registry struct {
	plugins []*Plugin
}

// Load starts every plugin in opts.PluginDir, checks it, describes it and
// configures it. It is all or nothing: when any plugin fails, Load stops
// those it started and returns one error naming every plugin that failed.
func Load(ctx context.Context, opts Options) (*Registry, error) {
	bins, err := Discover(opts.PluginDir)
	if err != nil {
		return nil, err
	}
	var errs []error
	found := make(map[string]bool, len(bins))
	for _, b := range bins {
		found[b.Name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(opts.RequireSHA256)) {
		if !found[name] {
			errs = append(errs, shared.Errorf(shared.ErrNotFound, "plugin", name,
				"plugin %s is pinned but %s has no %s%s", name, opts.PluginDir, Prefix, name))
		}
	}
	r := &Registry{}
	for _, b := range bins {
		p, err := Dispense(ctx, b.Name, opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.plugins = append(r.plugins, p)
	}
	if err := errors.Join(errs...); err != nil {
		_ = r.Close()
		return nil, err
	}
	return r, nil
}

// Plugins returns the loaded plugins, sorted by name.
func (r *Registry) Plugins() []*Plugin { return slices.Clone(r.plugins) }

// Get returns the plugin with the given name.
func (r *Registry) Get(name string) (*Plugin, error) {
	for _, p := range r.plugins {
		if p.name == name {
			return p, nil
		}
	}
	names := make([]string, len(r.plugins))
	for i, p := range r.plugins {
		names[i] = p.name
	}
	return nil, shared.Errorf(shared.ErrNotFound, "plugin", name, "no plugin %s loaded (loaded: %s)",
		shared.Show(name), strings.Join(names, ", "))
}

// Close stops every plugin and its child processes.
func (r *Registry) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, len(r.plugins))
	for i, p := range r.plugins {
		wg.Go(func() { errs[i] = p.Close() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ChecksumError refuses a plugin binary whose SHA-256 is not the pinned one.
// It wraps shared.ErrPermission.
type ChecksumError struct {
	Name string
	Path string
	Want string // hex, as pinned
	Got  string // hex, of the file on disk
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("plugin %s refused: %s has sha256 %s, want %s", e.Name, e.Path, e.Got, e.Want)
}

// Unwrap makes the error a shared.ErrPermission.
func (e *ChecksumError) Unwrap() error { return shared.ErrPermission }

// fileSHA256 returns the hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
