package testharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/cases"
	"github.com/pikaci/vmexec/testharness/incusfake"
	"github.com/pikaci/vmexec/testharness/remotefs"
	"github.com/pikaci/vmexec/testharness/remotehost"
)

// WholeRemote is a virtual remote host laid out from a whole-job case, and
// the case's job rebased onto a private local root (its job dir, snapshot
// dir and payload dirs on "the runner host").
type WholeRemote struct {
	*Remote
	// Job is the case's job with every local path under LocalRoot.
	Job       shared.WholeJob
	LocalRoot string
	Project   string
	// Members are, in a cluster case, each member's virtual remote host
	// (the API member's is Remote's FS and SSH); nil otherwise.
	Members map[string]*MemberHost
}

// Close stops the remote, every member's too.
func (r *WholeRemote) Close() error {
	err := r.Remote.Close()
	for _, h := range r.Members {
		if h.SSH != nil && h.SSH != r.SSH {
			h.SSH.Close()
		}
	}
	return err
}

// StartWholeRemote lays a whole-job case out in dir (which must exist and
// be empty): the remote host's files, the Incus server's images and
// instances, the guest image's files (written into each instance the
// moment it is started), and the local snapshot. Close stops it.
func StartWholeRemote(ctx context.Context, c *cases.WholeCase, dir string) (*WholeRemote, error) {
	rootDir := filepath.Join(dir, "root")
	clientDir := filepath.Join(dir, "client")
	local := filepath.Join(dir, "local")
	for _, d := range []string{rootDir, clientDir, local} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
		}
	}
	fsys, err := remotefs.New(rootDir)
	if err != nil {
		return nil, err
	}
	if err := c.Populate(fsys); err != nil {
		return nil, err
	}
	inc := incusfake.New(incusfake.Options{MissingExtensions: c.MissingExtensions, SourceExists: fsys.Exists})
	inc.SetHostFS(fsys)
	project := c.Job.Remote.Incus.ProjectOrDefault()
	var members map[string]*MemberHost
	if c.Cluster != nil {
		if members, err = clusterFS(c, dir, fsys, inc); err != nil {
			return nil, fmt.Errorf("case %s: cluster: %w", c.Name, err)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.Images)) {
		for _, alias := range slices.Sorted(maps.Keys(c.Images[p])) {
			inc.AddImage(p, alias, c.Images[p][alias], nil)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.Profiles)) {
		for _, name := range c.Profiles[p] {
			prof := incusfake.Profile{}
			if name == "default" { // a project's own default profile, with its root disk
				prof.Devices = shared.Devices{"root": {"type": "disk", "path": "/", "pool": "default"}}
			}
			inc.SetProfile(p, name, prof)
		}
	}
	for _, in := range c.Instances {
		inc.AddInstance(project, in.Name, in.Type, shared.Devices{"root": {"type": "disk", "path": "/", "pool": "default"}})
		for k, v := range in.Config {
			inc.SetConfig(project, in.Name, k, v)
		}
		if in.Running {
			if err := inc.StartInstance(project, in.Name); err != nil {
				return nil, fmt.Errorf("case %s: %w", c.Name, err)
			}
		}
	}
	if c.Cluster != nil {
		if err := placeInstances(c, inc, project); err != nil {
			return nil, fmt.Errorf("case %s: %w", c.Name, err)
		}
		if err := startFaults(c, inc); err != nil {
			return nil, fmt.Errorf("case %s: %w", c.Name, err)
		}
	}
	sr, handler, err := startSafety(ctx, c.Safety, &seedingHandler{inc: inc, guest: c.Guest, seeded: map[string]bool{}})
	if err != nil {
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	host, err := remotehost.Start(ctx, fsys, remotehost.Options{
		UnixSockets: map[string]http.Handler{shared.DefaultIncusSocket: handler},
	})
	if err != nil {
		sr.close()
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	cfg, err := host.WriteClientFilesWith(clientDir, c.Job.Remote.Host, sr.clientOptions(c.Safety))
	if err != nil {
		sr.close()
		host.Close()
		return nil, fmt.Errorf("virtual remote for case %s: %w", c.Name, err)
	}
	r := &Remote{FS: fsys, SSH: host, Incus: inc, SSHConfig: cfg, project: project, safety: sr}
	wr := &WholeRemote{Remote: r, LocalRoot: local, Project: project, Members: members}
	if c.Cluster != nil {
		if wr.SSHConfig, err = startMembers(ctx, c, members, host, cfg, clientDir, handler); err != nil {
			wr.Close()
			return nil, fmt.Errorf("virtual cluster for case %s: %w", c.Name, err)
		}
	}
	if wr.Job, err = layLocal(c, local); err != nil {
		wr.Close()
		return nil, fmt.Errorf("case %s: %w", c.Name, err)
	}
	return wr, nil
}

// rebase puts an absolute local path of the case under root.
func rebase(root, p string) string {
	if p == "" || !path.IsAbs(p) {
		return p // invalid as given: the plugin must refuse it as it is
	}
	return filepath.Join(root, filepath.FromSlash(p))
}

// layLocal writes the local side of the case under root and returns the
// job with its local paths there.
func layLocal(c *cases.WholeCase, root string) (shared.WholeJob, error) {
	job := c.Job
	job.Host.JobDir = rebase(root, job.Host.JobDir)
	job.Host.SnapshotDir = rebase(root, job.Host.SnapshotDir)
	job.Host.StagedPayloads = slices.Clone(job.Host.StagedPayloads)
	for i := range job.Host.StagedPayloads {
		job.Host.StagedPayloads[i].LocalDir = rebase(root, job.Host.StagedPayloads[i].LocalDir)
	}
	if filepath.IsAbs(job.Host.JobDir) {
		if err := os.MkdirAll(job.Host.JobDir, 0o755); err != nil {
			return job, err
		}
	}
	snap := job.Host.SnapshotDir
	if !filepath.IsAbs(snap) {
		return job, nil
	}
	if err := os.MkdirAll(snap, 0o755); err != nil {
		return job, err
	}
	return job, writeEntries(c.Snapshot, func(rel string) string { return filepath.Join(snap, filepath.FromSlash(rel)) })
}

// writeEntries lays entries out on this machine, parents first.
func writeEntries(entries map[string]cases.Entry, at func(string) string) error {
	names := slices.Sorted(maps.Keys(entries))
	for _, name := range names {
		e, p := entries[name], at(name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		var err error
		switch e.Kind {
		case "file":
			if err = os.WriteFile(p, e.Data, 0o600); err == nil {
				err = os.Chmod(p, e.Mode)
			}
		case "dir":
			if err = os.MkdirAll(p, 0o755); err == nil {
				err = os.Chmod(p, e.Mode)
			}
		case "symlink":
			err = os.Symlink(e.Target, p)
		case "fifo":
			err = syscall.Mkfifo(p, uint32(e.Mode.Perm()))
		}
		if err != nil {
			return fmt.Errorf("snapshot entry %s: %w", name, err)
		}
	}
	return nil
}

// seedingHandler is the fake Incus API, which writes the guest image's
// files into an instance when it is first started (a created instance's
// root filesystem is its image's).
type seedingHandler struct {
	inc   *incusfake.Server
	guest map[string]cases.Entry

	mu     sync.Mutex
	seeded map[string]bool
}

func (h *seedingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/state") && len(h.guest) > 0 {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			var st struct {
				Action string `json:"action"`
			}
			_ = json.Unmarshal(body, &st)
			name := path.Base(path.Dir(r.URL.Path))
			project := r.URL.Query().Get("project")
			if project == "" {
				project = shared.DefaultProject
			}
			if st.Action == "start" {
				h.seed(project, name)
			}
		}
	}
	h.inc.ServeHTTP(w, r)
}

func (h *seedingHandler) seed(project, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	key := project + "/" + name
	g := h.inc.Guest(project, name)
	if g == nil || h.seeded[key] {
		return
	}
	h.seeded[key] = true
	paths := make([]string, 0, len(h.guest))
	for p := range h.guest {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := h.guest[p]
		_ = g.MkdirAll(path.Dir(p))
		switch e.Kind {
		case "file":
			_ = g.WriteFile(p, e.Data, e.Mode)
		case "dir":
			_ = g.MkdirAll(p)
		case "symlink":
			_ = g.Symlink(e.Target, p)
		case "fifo":
			_ = g.Mkfifo(p, e.Mode.Perm())
		}
	}
}

// treeFS is what Tree reads.
type treeFS interface {
	Lstat(string) (fs.FileInfo, error)
	ReadDir(string) ([]fs.DirEntry, error)
	ReadFile(string) ([]byte, error)
	Readlink(string) (string, error)
}

type osTreeFS struct{}

func (osTreeFS) Lstat(p string) (fs.FileInfo, error)     { return os.Lstat(p) }
func (osTreeFS) ReadDir(p string) ([]fs.DirEntry, error) { return os.ReadDir(p) }
func (osTreeFS) ReadFile(p string) ([]byte, error)       { return os.ReadFile(p) }
func (osTreeFS) Readlink(p string) (string, error)       { return os.Readlink(p) }

// Tree describes every entry below root, by slash-separated path relative
// to it: "dir", "file MODE CONTENT" (MODE as four octal digits, set-uid
// and friends included), "symlink -> TARGET", or "other MODE". withModes
// false leaves MODE out of files. A missing root is an empty tree; nil
// means root is not a directory.
func Tree(fsys treeFS, root string, withModes bool) (map[string]string, error) {
	out := map[string]string{}
	fi, err := fsys.Lstat(root)
	if err != nil {
		if os.IsNotExist(err) {
			return out, nil
		}
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		ents, err := fsys.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p, r := path.Join(dir, e.Name()), path.Join(rel, e.Name())
			fi, err := fsys.Lstat(p)
			if err != nil {
				return err
			}
			switch m := fi.Mode(); {
			case m.IsDir():
				out[r] = "dir"
				if err := walk(p, r); err != nil {
					return err
				}
			case m&fs.ModeSymlink != 0:
				t, err := fsys.Readlink(p)
				if err != nil {
					return err
				}
				out[r] = "symlink -> " + t
			case m.IsRegular():
				data, err := fsys.ReadFile(p)
				if err != nil {
					return err
				}
				if withModes {
					out[r] = "file " + cases.FormatMode(m) + " " + string(data)
				} else {
					out[r] = "file " + string(data)
				}
			default:
				out[r] = "other " + m.Type().String()
			}
		}
		return nil
	}
	return out, walk(root, "")
}
