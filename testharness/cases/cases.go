// Package cases reads and writes conformance cases: txtar archives holding a
// case.json, the remote host's files and the wanted outcome, as
// docs/case-format.md says. Version 1 cases (PrepareDirectories and
// ConfigureDevices) are read here; whole-job cases (contract version 2,
// told apart by a "command" object in case.json) in whole.go.
package cases

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/strictjson"
	"golang.org/x/tools/txtar"
)

// Instance types a case may name (defined in the contract).
const (
	VirtualMachine = shared.InstanceTypeVirtualMachine
	Container      = shared.InstanceTypeContainer
)

// Names of the files in a case.
const (
	fileCase          = "case.json"
	fileMkdir         = "want/mkdir"
	filePrepareError  = "want/prepare-error"
	fileDevices       = "want/devices.json"
	fileDevicesError  = "want/devices-error"
	remotePrefix      = "remote/"
	defaultCaseSuffix = ".txtar"
)

// Case is one conformance case.
type Case struct {
	Name        string // the file name without .txtar
	File        string // where it was read from
	Description string

	Spec              shared.JobSpec
	Instance          string         // the instance on the remote Incus server; "" when none
	InstanceType      string         // VirtualMachine or Container
	Devices           shared.Devices // the instance's devices when the case starts
	MissingExtensions []string

	RemoteDirs     []string
	RemoteSymlinks map[string]string
	RemoteFiles    map[string][]byte // remote path → content

	// Exactly one of WantMkdir and WantPrepareError is set; when WantMkdir
	// is, exactly one of WantDevices and WantDevicesError is.
	WantMkdir        *string
	WantPrepareError []string
	WantDevices      shared.Devices
	WantDevicesError []string

	// Safety, when set, makes this a safety case (safety.go).
	Safety *Safety

	archive *txtar.Archive
}

// caseJSON is case.json; unknown fields are an error.
type caseJSON struct {
	Job            shared.Job        `json:"job"`
	Host           shared.HostPaths  `json:"host"`
	Remote         remoteJSON        `json:"remote"`
	RemoteDirs     []string          `json:"remote_dirs"`
	RemoteSymlinks map[string]string `json:"remote_symlinks"`
	Safety         *Safety           `json:"safety"`
}

type remoteJSON struct {
	Host    string    `json:"host"`
	WorkDir string    `json:"work_dir"`
	Incus   incusJSON `json:"incus"`
}

type incusJSON struct {
	Project           string         `json:"project"`
	Instance          string         `json:"instance"`
	InstanceType      string         `json:"instance_type"`
	Devices           shared.Devices `json:"devices"`
	MissingExtensions []string       `json:"missing_extensions"`
}

// Load reads one case.
func Load(file string) (*Case, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read case: %w", err)
	}
	c, err := Parse(strings.TrimSuffix(filepath.Base(file), defaultCaseSuffix), data)
	if err != nil {
		return nil, fmt.Errorf("case %s: %w", file, err)
	}
	c.File = file
	return c, nil
}

// LoadDir reads every *.txtar in dir, sorted by name.
func LoadDir(dir string) ([]*Case, error) {
	cs, err := LoadFS(os.DirFS(dir), ".")
	if err != nil {
		return nil, fmt.Errorf("cases in %s: %w", dir, err)
	}
	for _, c := range cs {
		c.File = filepath.Join(dir, filepath.FromSlash(c.File))
	}
	return cs, nil
}

// Parse decodes a case from its archive bytes.
func Parse(name string, data []byte) (*Case, error) {
	a := txtar.Parse(data)
	c := &Case{
		Name:           name,
		Description:    strings.TrimSpace(string(a.Comment)),
		RemoteFiles:    map[string][]byte{},
		RemoteSymlinks: map[string]string{},
		archive:        a,
	}
	seen := map[string]bool{}
	var haveCase bool
	for _, f := range a.Files {
		if seen[f.Name] {
			return nil, fmt.Errorf("file %s appears twice", f.Name)
		}
		seen[f.Name] = true
		switch {
		case f.Name == fileCase:
			haveCase = true
			if err := c.decodeJSON(f.Data); err != nil {
				return nil, err
			}
		case strings.HasPrefix(f.Name, remotePrefix):
			p := "/" + strings.TrimPrefix(f.Name, remotePrefix)
			if path.Clean(p) != p || p == "/" {
				return nil, fmt.Errorf("remote file %s: not a clean path", f.Name)
			}
			c.RemoteFiles[p] = f.Data
		case f.Name == fileMkdir:
			s := strings.TrimSuffix(string(f.Data), "\n")
			c.WantMkdir = &s
		case f.Name == filePrepareError:
			c.WantPrepareError = lines(f.Data)
		case f.Name == fileDevices:
			var d shared.Devices
			if err := strictjson.Decode(f.Data, &d); err != nil {
				return nil, fmt.Errorf("%s: %w", fileDevices, err)
			}
			if d == nil {
				d = shared.Devices{}
			}
			c.WantDevices = d
		case f.Name == fileDevicesError:
			c.WantDevicesError = lines(f.Data)
		default:
			return nil, fmt.Errorf("unknown file %s in case", f.Name)
		}
	}
	if !haveCase {
		return nil, errors.New("no case.json")
	}
	return c, c.check(seen)
}

func (c *Case) decodeJSON(data []byte) error {
	var j caseJSON
	if err := strictjson.Decode(data, &j); err != nil {
		return fmt.Errorf("%s: %w", fileCase, err)
	}
	c.Spec = shared.JobSpec{
		Job:  j.Job,
		Host: j.Host,
		Remote: shared.Remote{
			Host:    j.Remote.Host,
			WorkDir: j.Remote.WorkDir,
			Incus:   shared.Incus{Project: j.Remote.Incus.Project},
		},
	}
	c.Instance = j.Remote.Incus.Instance
	c.InstanceType = j.Remote.Incus.InstanceType
	c.Devices = j.Remote.Incus.Devices
	if c.Devices == nil {
		c.Devices = shared.Devices{}
	}
	c.MissingExtensions = j.Remote.Incus.MissingExtensions
	if err := j.Safety.check(); err != nil {
		return fmt.Errorf("%s: %w", fileCase, err)
	}
	c.Safety = j.Safety
	c.RemoteDirs = j.RemoteDirs
	if j.RemoteSymlinks != nil {
		c.RemoteSymlinks = j.RemoteSymlinks
	}
	switch c.InstanceType {
	case VirtualMachine, Container:
	case "":
		c.InstanceType = VirtualMachine
	default:
		return fmt.Errorf("%s: remote.incus.instance_type %q is neither %q nor %q", fileCase, c.InstanceType, VirtualMachine, Container)
	}
	return nil
}

func (c *Case) check(seen map[string]bool) error {
	if seen[fileMkdir] == seen[filePrepareError] {
		return fmt.Errorf("want exactly one of %s and %s", fileMkdir, filePrepareError)
	}
	if seen[fileMkdir] && seen[fileDevices] == seen[fileDevicesError] {
		return fmt.Errorf("want exactly one of %s and %s", fileDevices, fileDevicesError)
	}
	if seen[filePrepareError] && (seen[fileDevices] || seen[fileDevicesError]) {
		return fmt.Errorf("a case whose PrepareDirectories fails wants no devices")
	}
	if seen[fileMkdir] && c.Instance == "" {
		return fmt.Errorf("%s: remote.incus.instance is required when PrepareDirectories succeeds", fileCase)
	}
	return nil
}

// lines returns the non-empty lines of a want file.
func lines(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// Outcome is what a plugin did, in want/ terms, for Update.
type Outcome struct {
	Mkdir        string
	PrepareError string // set when PrepareDirectories failed
	Devices      shared.Devices
	DevicesError string // set when ConfigureDevices failed
}

// Update rewrites the case's want/ files from an outcome, leaving every
// input untouched, and writes the archive back to c.File.
func (c *Case) Update(o Outcome) error {
	if c.File == "" {
		return fmt.Errorf("case %s was not read from a file and cannot be updated", c.Name)
	}
	var files []txtar.File
	old := map[string][]byte{}
	for _, f := range c.archive.Files {
		if strings.HasPrefix(f.Name, "want/") {
			old[f.Name] = f.Data
			continue
		}
		files = append(files, f)
	}
	// A wanted error lists the lines a message must hold; when the new
	// message still holds them all, the hand-picked file is kept as it is.
	errorFile := func(name, msg string) txtar.File {
		if data, ok := old[name]; ok {
			keep := true
			for _, l := range lines(data) {
				keep = keep && strings.Contains(msg, l)
			}
			if keep {
				return txtar.File{Name: name, Data: data}
			}
		}
		return txtar.File{Name: name, Data: []byte(msg + "\n")}
	}
	if o.PrepareError != "" {
		files = append(files, errorFile(filePrepareError, o.PrepareError))
	} else {
		files = append(files, txtar.File{Name: fileMkdir, Data: []byte(o.Mkdir + "\n")})
		if o.DevicesError != "" {
			files = append(files, errorFile(fileDevicesError, o.DevicesError))
		} else {
			data, err := json.MarshalIndent(o.Devices, "", "  ")
			if err != nil {
				return fmt.Errorf("encode devices: %w", err)
			}
			files = append(files, txtar.File{Name: fileDevices, Data: append(data, '\n')})
		}
	}
	a := &txtar.Archive{Comment: c.archive.Comment, Files: files}
	if err := os.WriteFile(c.File, txtar.Format(a), 0o644); err != nil {
		return fmt.Errorf("update case %s: %w", c.File, err)
	}
	return nil
}

// LoadFS reads every *.txtar in dir of fsys, sorted by name. Cases read
// this way have no File and cannot be updated.
func LoadFS(fsys fs.FS, dir string) ([]*Case, error) {
	files, err := caseFiles(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.txtar cases in %s or its folders", dir)
	}
	// Whole-job cases are read by LoadWholeFS.
	return loadKind(fsys, files, false, Parse, func(c *Case, f string) string { c.File = f; return c.Name })
}

// caseFiles lists the cases in dir itself and one folder below it (the
// project keeps the contract's public cases and its own apart), sorted.
func caseFiles(fsys fs.FS, dir string) ([]string, error) {
	var files []string
	for _, pattern := range []string{path.Join(dir, "*"+defaultCaseSuffix), path.Join(dir, "*", "*"+defaultCaseSuffix)} {
		m, err := fs.Glob(fsys, pattern)
		if err != nil {
			return nil, fmt.Errorf("list cases in %s: %w", dir, err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	return files, nil
}

// loadKind parses the files that hold whole-job cases (whole) or the
// others, refuses two cases of one name, records each case's file (setFile
// returns the case's name) and sorts them by name.
func loadKind[T any](fsys fs.FS, files []string, whole bool, parse func(name string, data []byte) (T, error), setFile func(c T, file string) string) ([]T, error) {
	type named struct {
		name string
		c    T
	}
	var all []named
	seen := map[string]string{}
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("read case: %w", err)
		}
		if IsWholeCase(data) != whole {
			continue
		}
		name := strings.TrimSuffix(path.Base(f), defaultCaseSuffix)
		if other, dup := seen[name]; dup {
			return nil, fmt.Errorf("case %s: %s has the same name; case names must be unique", f, other)
		}
		seen[name] = f
		c, err := parse(name, data)
		if err != nil {
			return nil, fmt.Errorf("case %s: %w", f, err)
		}
		all = append(all, named{setFile(c, f), c})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	out := make([]T, len(all))
	for i, n := range all {
		out[i] = n.c
	}
	return out, nil
}
