package cases

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/strictjson"
	"golang.org/x/tools/txtar"
)

// The calls of the whole job, as a whole-job case's want/error names the
// one that must fail.
const (
	CallPrepareDirectories = "PrepareDirectories"
	CallStage              = "StageWorkspaceSnapshot"
	CallPrepareRuntime     = "PrepareRuntime"
	CallRunJob             = "RunJob"
	CallCollectArtifacts   = "CollectArtifacts"
)

// Calls lists the whole job's calls in the order the harness makes them
// (Cleanup follows whatever happened, once PrepareRuntime was called).
var Calls = []string{CallPrepareDirectories, CallStage, CallPrepareRuntime, CallRunJob, CallCollectArtifacts}

// Names of the files in a whole-job case (docs/case-format.md, "Whole-job
// cases").
const (
	wholeSnapshotPrefix = "snapshot/"
	wholeGuestPrefix    = "guest/"
	fileWantStage       = "want/stage.json"
	fileWantCreate      = "want/create.json"
	fileWantExec        = "want/exec.json"
	fileWantStdout      = "want/stdout"
	fileWantStderr      = "want/stderr"
	fileWantResult      = "want/result.json"
	fileWantArtifacts   = "want/artifacts.json"
	fileWantError       = "want/error"
)

// WholeCase is one whole-job conformance case (contract version 2).
type WholeCase struct {
	Name        string
	File        string
	Description string

	// Job is the job as the case gives it; the harness moves host.job_dir,
	// host.snapshot_dir and every local_dir under a private local root
	// before running it (remote paths and names do not depend on them).
	Job shared.WholeJob

	// What exists before the job.
	RemoteDirs        []string
	RemoteSymlinks    map[string]string
	RemoteFiles       map[string][]byte
	Images            map[string]map[string]string // project → alias → fingerprint
	Profiles          map[string][]string          // project → profiles beside default
	Instances         []WholeInstance
	MissingExtensions []string
	// Safety, when set, makes this a safety case (safety.go).
	Safety *Safety
	// Live: the job's first output chunk must reach the host while the
	// job's process still runs in the guest.
	Live bool
	// Cluster, when set, makes this a cluster case (cluster.go);
	// MemberFiles are each member's remote files (member/<name>/<path>).
	Cluster     *Cluster
	MemberFiles map[string]map[string][]byte

	// The local snapshot (relative path → entry) and the guest image's
	// own files (absolute guest path → entry).
	Snapshot map[string]Entry
	Guest    map[string]Entry

	// The wants; a nil pointer or map is not checked. WantError is set
	// exactly when a call must fail.
	WantStage     *WantStage
	WantCreate    *WantCreate
	WantExec      *WantExec
	WantStdout    *string
	WantStderr    *string
	WantResult    *WantResult
	WantArtifacts *WantArtifacts
	WantError     *WantError
	WantPlacement *WantPlacement
}

// WholeInstance is an instance on the Incus server before the job.
type WholeInstance struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Running bool   `json:"running"`
	// Config is set on the instance (labels such as user.pikaci.run: the
	// plugin deletes a stale instance only when they are the job's).
	Config map[string]string `json:"config,omitempty"`
	// Location is, in a cluster case, the member it is on (default: the
	// first).
	Location string `json:"location,omitempty"`
}

// Entry is one file of the local snapshot or the guest image: a regular
// file (Data, Mode), a directory, a symlink (Target) or a FIFO.
type Entry struct {
	Kind   string // "file", "dir", "symlink", "fifo"
	Mode   fs.FileMode
	Data   []byte
	Target string
}

// WantStage is want/stage.json: whether the snapshot was reused, and the
// remote snapshot dir's tree afterwards (see Tree).
type WantStage struct {
	Reused bool              `json:"reused"`
	Tree   map[string]string `json:"tree"`
}

// WantCreate is want/create.json: the one create request. Config holds
// every key but user.pikaci.created (RFC 3339 in UTC), user.pikaci.heartbeat (the
// same, when present) and user.pikaci.nonce (not empty, when present).
type WantCreate struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Alias    string            `json:"alias"`
	Profiles []string          `json:"profiles"`
	Config   map[string]string `json:"config"`
	Devices  shared.Devices    `json:"devices"`
}

// WantExec is want/exec.json: the job's exec as the guest ran it. Env
// lists variables the job's process must have (the image's own come on
// top).
type WantExec struct {
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env"`
	Cwd  string            `json:"cwd"`
	User int               `json:"user"`
}

// WantResult is want/result.json.
type WantResult struct {
	ExitCode int  `json:"exit_code"`
	TimedOut bool `json:"timed_out"`
}

// WantArtifacts is want/artifacts.json: the tree collected into
// <host.job_dir>/artifacts (see Tree) and the warnings, each a substring
// of one warning, one per warning.
type WantArtifacts struct {
	Tree     map[string]string `json:"tree"`
	Warnings []string          `json:"warnings"`
}

// WantError is want/error: the call that fails ("call: NAME" on the first
// line) and the lines its error must contain.
type WantError struct {
	Call  string
	Lines []string
}

type wholeJSON struct {
	Job       shared.Job        `json:"job"`
	Host      shared.HostPaths  `json:"host"`
	Remote    shared.Remote     `json:"remote"`
	Runtime   *shared.Runtime   `json:"runtime"`
	Command   *shared.Command   `json:"command"`
	Artifacts *shared.Artifacts `json:"artifacts"`
	Before    beforeJSON        `json:"before"`
	Snapshot  entriesJSON       `json:"snapshot"`
	Guest     entriesJSON       `json:"guest"`
	Live      bool              `json:"live"`
	Safety    *Safety           `json:"safety"`
	Cluster   *Cluster          `json:"cluster"`
}

type beforeJSON struct {
	RemoteDirs        []string                     `json:"remote_dirs"`
	RemoteSymlinks    map[string]string            `json:"remote_symlinks"`
	Images            map[string]map[string]string `json:"images"`
	Profiles          map[string][]string          `json:"profiles"`
	Instances         []WholeInstance              `json:"instances"`
	MissingExtensions []string                     `json:"missing_extensions"`
}

// entriesJSON says what a file list cannot: modes (octal strings, e.g.
// "0755" or "4755" for set-uid), directories, symlinks and FIFOs.
type entriesJSON struct {
	Modes    map[string]string `json:"modes"`
	Dirs     []string          `json:"dirs"`
	Symlinks map[string]string `json:"symlinks"`
	FIFOs    []string          `json:"fifos"`
}

// IsWholeCase reports whether an archive is a whole-job case: its
// case.json has a "command" object.
func IsWholeCase(data []byte) bool {
	for _, f := range txtar.Parse(data).Files {
		if f.Name == fileCase {
			var top map[string]json.RawMessage
			if json.Unmarshal(f.Data, &top) != nil {
				return false // the version 1 parser says what is wrong
			}
			_, ok := top["command"]
			return ok
		}
	}
	return false
}

// ParseWhole decodes a whole-job case from its archive bytes.
func ParseWhole(name string, data []byte) (*WholeCase, error) {
	a := txtar.Parse(data)
	c := &WholeCase{
		Name:        name,
		Description: strings.TrimSpace(string(a.Comment)),
		RemoteFiles: map[string][]byte{},
		Snapshot:    map[string]Entry{},
		Guest:       map[string]Entry{},
	}
	seen := map[string]bool{}
	var j *wholeJSON
	for _, f := range a.Files {
		if seen[f.Name] {
			return nil, fmt.Errorf("file %s appears twice", f.Name)
		}
		seen[f.Name] = true
		var err error
		switch {
		case f.Name == fileCase:
			j = &wholeJSON{}
			if err := strictjson.Decode(f.Data, j); err != nil {
				return nil, fmt.Errorf("%s: %w", fileCase, err)
			}
		case strings.HasPrefix(f.Name, remotePrefix):
			p, perr := cleanAbs(f.Name, remotePrefix)
			err = perr
			c.RemoteFiles[p] = f.Data
		case strings.HasPrefix(f.Name, wholeSnapshotPrefix):
			rel := strings.TrimPrefix(f.Name, wholeSnapshotPrefix)
			if !fs.ValidPath(rel) || rel == "." {
				return nil, fmt.Errorf("snapshot file %s: not a clean relative path", f.Name)
			}
			c.Snapshot[rel] = Entry{Kind: "file", Mode: 0o644, Data: f.Data}
		case strings.HasPrefix(f.Name, wholeGuestPrefix):
			p, perr := cleanAbs(f.Name, wholeGuestPrefix)
			err = perr
			c.Guest[p] = Entry{Kind: "file", Mode: 0o644, Data: f.Data}
		case f.Name == fileWantStage:
			c.WantStage = &WantStage{}
			err = strictjson.Decode(f.Data, c.WantStage)
		case f.Name == fileWantCreate:
			c.WantCreate = &WantCreate{}
			err = strictjson.Decode(f.Data, c.WantCreate)
		case f.Name == fileWantExec:
			c.WantExec = &WantExec{}
			err = strictjson.Decode(f.Data, c.WantExec)
		case f.Name == fileWantStdout:
			s := string(f.Data)
			c.WantStdout = &s
		case f.Name == fileWantStderr:
			s := string(f.Data)
			c.WantStderr = &s
		case f.Name == fileWantResult:
			c.WantResult = &WantResult{}
			err = strictjson.Decode(f.Data, c.WantResult)
		case f.Name == fileWantArtifacts:
			c.WantArtifacts = &WantArtifacts{}
			err = strictjson.Decode(f.Data, c.WantArtifacts)
		case f.Name == fileWantError:
			c.WantError, err = parseWantError(f.Data)
		case f.Name == fileWantPlacement:
			c.WantPlacement = &WantPlacement{}
			err = strictjson.Decode(f.Data, c.WantPlacement)
		case strings.HasPrefix(f.Name, memberPrefix):
			err = c.parseMemberFile(f.Name, f.Data)
		default:
			return nil, fmt.Errorf("unknown file %s in a whole-job case", f.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	if j == nil {
		return nil, errors.New("no case.json")
	}
	if err := c.fromJSON(j); err != nil {
		return nil, fmt.Errorf("%s: %w", fileCase, err)
	}
	if err := c.checkWants(); err != nil {
		return nil, err
	}
	return c, c.checkCluster()
}

func cleanAbs(name, prefix string) (string, error) {
	p := "/" + strings.TrimPrefix(name, prefix)
	if path.Clean(p) != p || p == "/" {
		return "", fmt.Errorf("not a clean path")
	}
	return p, nil
}

func parseWantError(data []byte) (*WantError, error) {
	ls := lines(data)
	if len(ls) == 0 {
		return nil, errors.New("empty: want a first line \"call: NAME\"")
	}
	call, ok := strings.CutPrefix(ls[0], "call: ")
	if !ok || !contains(Calls, call) {
		return nil, fmt.Errorf("first line %q: want \"call: NAME\", NAME one of %s", ls[0], strings.Join(Calls, ", "))
	}
	return &WantError{Call: call, Lines: ls[1:]}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *WholeCase) fromJSON(j *wholeJSON) error {
	if j.Runtime == nil || j.Command == nil {
		return errors.New("a whole-job case needs runtime and command")
	}
	c.Job = shared.WholeJob{
		JobSpec:   shared.JobSpec{Job: j.Job, Host: j.Host, Remote: j.Remote},
		Runtime:   j.Runtime,
		Command:   j.Command,
		Artifacts: j.Artifacts,
	}
	if err := j.Safety.check(); err != nil {
		return err
	}
	c.Safety = j.Safety
	c.Cluster = j.Cluster
	c.RemoteDirs = j.Before.RemoteDirs
	c.RemoteSymlinks = j.Before.RemoteSymlinks
	if c.RemoteSymlinks == nil {
		c.RemoteSymlinks = map[string]string{}
	}
	c.Images = j.Before.Images
	c.Profiles = j.Before.Profiles
	c.Instances = j.Before.Instances
	for i, in := range c.Instances {
		switch in.Type {
		case "":
			c.Instances[i].Type = VirtualMachine
		case VirtualMachine, Container:
		default:
			return fmt.Errorf("before.instances[%d].type %q is neither %q nor %q", i, in.Type, VirtualMachine, Container)
		}
	}
	c.MissingExtensions = j.Before.MissingExtensions
	c.Live = j.Live
	if err := applyEntries("snapshot", c.Snapshot, j.Snapshot, false); err != nil {
		return err
	}
	return applyEntries("guest", c.Guest, j.Guest, true)
}

// applyEntries adds the dirs, symlinks and FIFOs of e to m and sets the
// modes it lists (of files in m, or of dirs).
func applyEntries(what string, m map[string]Entry, e entriesJSON, abs bool) error {
	check := func(p string) error {
		if abs {
			if path.Clean(p) != p || !path.IsAbs(p) || p == "/" {
				return fmt.Errorf("%s path %q: not a clean absolute path", what, p)
			}
			return nil
		}
		if !fs.ValidPath(p) || p == "." {
			return fmt.Errorf("%s path %q: not a clean relative path", what, p)
		}
		return nil
	}
	add := func(p string, en Entry) error {
		if err := check(p); err != nil {
			return err
		}
		if _, dup := m[p]; dup {
			return fmt.Errorf("%s path %q is given twice", what, p)
		}
		m[p] = en
		return nil
	}
	for _, d := range e.Dirs {
		if err := add(d, Entry{Kind: "dir", Mode: 0o755}); err != nil {
			return err
		}
	}
	for l, t := range e.Symlinks {
		if err := add(l, Entry{Kind: "symlink", Target: t}); err != nil {
			return err
		}
	}
	for _, f := range e.FIFOs {
		if err := add(f, Entry{Kind: "fifo", Mode: 0o644}); err != nil {
			return err
		}
	}
	for p, s := range e.Modes {
		en, ok := m[p]
		if !ok || (en.Kind != "file" && en.Kind != "dir") {
			return fmt.Errorf("%s.modes: %q is not a file or dir of the case", what, p)
		}
		mode, err := ParseMode(s)
		if err != nil {
			return fmt.Errorf("%s.modes[%q]: %w", what, p, err)
		}
		en.Mode = mode
		m[p] = en
	}
	return nil
}

// ParseMode reads an octal mode such as "0755" or "4755" (set-uid).
func ParseMode(s string) (fs.FileMode, error) {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("mode %q is not an octal mode up to 7777", s)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}

// FormatMode writes a mode as ParseMode reads it (four octal digits).
func FormatMode(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

func (c *WholeCase) checkWants() error {
	if c.WantError == nil {
		for name, ok := range map[string]bool{
			fileWantStage: c.WantStage != nil, fileWantCreate: c.WantCreate != nil, fileWantExec: c.WantExec != nil,
			fileWantResult: c.WantResult != nil, fileWantArtifacts: c.WantArtifacts != nil,
		} {
			// A safety case is about its fault: what the instance was
			// left able to give afterwards is not its question.
			if !ok && !(c.Safety != nil && name == fileWantArtifacts) {
				return fmt.Errorf("a case whose job succeeds wants %s", name)
			}
		}
		return nil
	}
	// The wants of calls after the failing one make no sense.
	idx := 0
	for i, call := range Calls {
		if call == c.WantError.Call {
			idx = i
		}
	}
	for name, w := range map[string]struct {
		call int
		set  bool
	}{
		fileWantStage: {1, c.WantStage != nil}, fileWantCreate: {2, c.WantCreate != nil}, fileWantExec: {3, c.WantExec != nil},
		fileWantResult: {3, c.WantResult != nil}, fileWantArtifacts: {4, c.WantArtifacts != nil},
	} {
		if w.set && w.call > idx {
			return fmt.Errorf("%s: the job fails in %s, before that call", name, c.WantError.Call)
		}
	}
	return nil
}

// LoadWholeFS reads every whole-job case (*.txtar whose case.json has a
// command) in dir of fsys or one folder below it, sorted by name.
func LoadWholeFS(fsys fs.FS, dir string) ([]*WholeCase, error) {
	files, err := caseFiles(fsys, dir)
	if err != nil {
		return nil, err
	}
	return loadKind(fsys, files, true, ParseWhole, func(c *WholeCase, f string) string { c.File = f; return c.Name })
}
