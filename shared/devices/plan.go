package devices

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// Remote is the I/O a plan needs on the host that holds the sources, asked
// for in batches so an adapter can answer each batch in one round trip.
type Remote interface {
	// Fetch reads every file in q.Read and resolves every path in
	// q.Resolve. A failure of one item is reported in its result, not as
	// the error; the error is for a failure of the whole batch.
	Fetch(ctx context.Context, q Query) (Answer, error)
}

// Query is one batch of reads and resolutions.
type Query struct {
	Read    []string
	Resolve []string
}

// Answer holds one result per item of a Query, in order.
type Answer struct {
	Files    []File
	Resolved []Resolved
}

// File is the content of one file, or why it could not be read.
type File struct {
	Data []byte
	Err  error // wraps fs.ErrNotExist when the file is missing or unreadable
}

// Resolved is a path with every symlink resolved as readlink -f does.
type Resolved struct {
	Path   string // absolute and canonical; empty when Err is set
	Exists bool   // the resolved path exists
	Err    error  // a component other than the last is missing, a loop, ...
}

// Device is one planned disk device.
type Device struct {
	Name      string
	Payload   string // "" for the snapshot
	Mount     string // the mount's name; "snapshot" for the snapshot
	Source    string // unresolved: the name is computed from it
	Resolved  string // Source with all symlinks resolved on the remote host
	GuestPath string
	ReadOnly  bool

	root string // the payload's resolved root, that Resolved must lie in
}

// who names the device's origin in errors.
func (d Device) who() string {
	if d.Payload == "" {
		return "the workspace snapshot"
	}
	return fmt.Sprintf("staged payload %s mount %s", shared.Show(d.Payload), shared.Show(d.Mount))
}

// Plan is the set of disk devices a job's instance gets.
type Plan struct {
	Instance string
	Devices  []Device
}

// Target says what the instance and server accept.
type Target struct {
	// VirtualMachine: the instance is a VM (Incus refuses any io.bus on a
	// container's disk).
	VirtualMachine bool
	// VirtiofsBus: the server lists the disk_io_bus_cache_filesystem API
	// extension, so io.bus=virtiofs is known.
	VirtiofsBus bool
}

// ExtensionVirtiofsBus is the API extension that brings io.bus=virtiofs.
const ExtensionVirtiofsBus = "disk_io_bus_cache_filesystem"

// WarnNoVirtiofsBus is the warning when io.bus is left out on a VM.
const WarnNoVirtiofsBus = "io.bus=virtiofs left out: the server does not list the " + ExtensionVirtiofsBus + " API extension"

// Config renders the plan as Incus device configs. It returns a warning when
// io.bus had to be left out on a virtual machine.
func (p Plan) Config(t Target) (shared.Devices, []string) {
	out := make(shared.Devices, len(p.Devices))
	bus := t.VirtualMachine && t.VirtiofsBus
	for _, d := range p.Devices {
		c := map[string]string{
			"type":   "disk",
			"source": d.Resolved,
			"path":   d.GuestPath,
			"shift":  "false",
		}
		if d.ReadOnly {
			c["readonly"] = "true"
		}
		if bus {
			c["io.bus"] = "virtiofs"
		}
		out[d.Name] = c
	}
	var warnings []string
	if t.VirtualMachine && !t.VirtiofsBus && len(p.Devices) > 0 {
		warnings = append(warnings, WarnNoVirtiofsBus)
	}
	return out, warnings
}

// Names returns the planned device names, sorted.
func (p Plan) Names() []string {
	names := make([]string, len(p.Devices))
	for i, d := range p.Devices {
		names[i] = d.Name
	}
	sort.Strings(names)
	return names
}

// Check validates a job for ConfigureDevices without any I/O: its layout,
// and that it does not ask for a writable workspace, which this executor
// never gives (the workspace is shared read-only).
func Check(spec shared.JobSpec) (layout.Layout, error) {
	l, err := layout.Derive(spec)
	if err != nil {
		return layout.Layout{}, err
	}
	if spec.Job.WritableWorkspace {
		return layout.Layout{}, shared.Errorf(shared.ErrInvalidInput, "job.writable_workspace", "true",
			"job %s asks for a writable workspace: the remote Linux VM executor shares the workspace read-only", shared.Show(spec.Job.ID))
	}
	return l, nil
}

// Build validates the job, reads the staged payloads' manifests and resolves
// every source through r, and returns the plan. It asks r for at most two
// batches: manifests and roots first, then sources below a root. Nothing is
// changed anywhere.
func Build(ctx context.Context, spec shared.JobSpec, r Remote) (Plan, error) {
	return build(ctx, spec, r, false)
}

// BuildAhead is Build for a dry run ahead of the phases that create the
// snapshot dir (PrepareDirectories creates its parent and
// StageWorkspaceSnapshot the dir itself): when the snapshot dir is missing,
// its device's source is planned as it will resolve once created, the
// deepest of its ancestors that resolves, with the rest appended as mkdir -p
// creates it. Everything else is as in Build: the payloads are read as they
// are (no earlier phase of the whole job stages them). Nothing is changed
// anywhere.
func BuildAhead(ctx context.Context, spec shared.JobSpec, r Remote) (Plan, error) {
	return build(ctx, spec, r, true)
}

// ancestors lists p's parent, its parent, and so on up to "/".
func ancestors(p string) []string {
	var out []string
	for p != "/" {
		p = path.Dir(p)
		out = append(out, p)
	}
	return out
}

// planned is where a missing path will resolve once created: the first of
// its ancestors (in ancestors' order) that resolves, joined with the
// components below it. ok is false when none resolves.
func planned(p string, own Resolved, anc []string, res []Resolved) (string, bool) {
	if own.Err == nil {
		// Its parent exists: readlink -f already says where it goes.
		return own.Path, true
	}
	rest := path.Base(p)
	for i, a := range anc {
		if res[i].Err == nil {
			return path.Join(res[i].Path, rest), true
		}
		rest = path.Join(path.Base(a), rest)
	}
	return "", false
}

func build(ctx context.Context, spec shared.JobSpec, r Remote, ahead bool) (Plan, error) {
	l, err := Check(spec)
	if err != nil {
		return Plan{}, err
	}

	plan := Plan{Instance: l.Instance}
	snapshot := Device{
		Name:      SnapshotDeviceName(l.SnapshotDir, SnapshotGuestPath),
		Mount:     "snapshot",
		Source:    l.SnapshotDir,
		GuestPath: SnapshotGuestPath,
		ReadOnly:  true,
	}

	var payloads []layout.Payload
	if spec.Job.Staged {
		payloads = l.Payloads
	}

	// Batch 1: the snapshot and every payload root resolved, every manifest
	// resolved and read.
	q := Query{Resolve: make([]string, 0, 1+2*len(payloads)), Read: make([]string, 0, len(payloads))}
	q.Resolve = append(q.Resolve, snapshot.Source)
	roots := make([]string, len(payloads))
	for i, p := range payloads {
		roots[i] = p.RemoteDir
		if l.Local {
			roots[i] = p.LocalDir
		}
		file := path.Join(roots[i], ManifestPath)
		if err := layout.CheckLengths("manifest", file); err != nil {
			return Plan{}, fmt.Errorf("staged payload %s: %w", shared.Show(p.Name), err)
		}
		q.Resolve = append(q.Resolve, roots[i])
		q.Read = append(q.Read, file)
	}
	q.Resolve = append(q.Resolve, q.Read...)
	// Ahead of the phases that create it, the snapshot dir's ancestors
	// too, in the same batch.
	var anc []string
	if ahead {
		anc = ancestors(snapshot.Source)
		q.Resolve = append(q.Resolve, anc...)
	}
	// Last, the work dir: the snapshot must resolve to its own place below it.
	q.Resolve = append(q.Resolve, l.WorkDir)
	a, err := fetch(ctx, r, q)
	if err != nil {
		return Plan{}, err
	}
	work := a.Resolved[len(a.Resolved)-1]
	a.Resolved = a.Resolved[:len(a.Resolved)-1]
	if own := a.Resolved[0]; ahead && (own.Err != nil || !own.Exists) {
		p, ok := planned(snapshot.Source, own, anc, a.Resolved[len(a.Resolved)-len(anc):])
		if ok {
			a.Resolved[0] = Resolved{Path: p, Exists: true}
		}
	}

	if own := a.Resolved[0]; own.Err == nil && own.Exists {
		// The snapshot dir must resolve to its own place below the
		// resolved work dir: a link planted at snapshots/<hash> (or in
		// runs/) would share a tree that is not the job's snapshot.
		switch want := layout.OwnPlace(l.WorkDir, work.Path, snapshot.Source); {
		case work.Err == nil && work.Exists && own.Path != want:
			return Plan{}, shared.Errorf(shared.ErrPermission, "snapshot_dir", snapshot.Source,
				"the snapshot dir %s resolves to %s, not to %s below the work dir %s: a link on the way; a snapshot is only shared from its own place",
				snapshot.Source, shared.Show(own.Path), shared.Show(want), l.WorkDir)
		case !ahead && (work.Err != nil || !work.Exists):
			return Plan{}, shared.Errorf(shared.ErrNotFound, "remote.work_dir", l.WorkDir,
				"the work dir %s cannot be resolved on the remote host, so the snapshot dir %s cannot be checked to lie in it", l.WorkDir, snapshot.Source)
		}
	}
	resolved := make(map[string]Resolved, len(q.Resolve))
	for i, p := range q.Resolve[:1+len(payloads)] {
		resolved[p] = a.Resolved[i]
	}
	// Each payload's resolved root: what its manifest and mounts must stay in.
	realRoots := make([]string, len(payloads))
	for i, root := range roots {
		res := resolved[root]
		field := "remote dir"
		if l.Local {
			field = "local_dir"
		}
		if res.Err != nil || !res.Exists {
			cause := res.Err
			if cause == nil {
				cause = fmt.Errorf("%s does not exist", root)
			}
			return Plan{}, shared.Errorf(shared.ErrNotFound, field, root,
				"staged payload %s: resolve payload root %s on the remote host: %w", shared.Show(payloads[i].Name), root, cause)
		}
		if res.Path == "/" {
			// Every path lies in /: no containment would be left to check.
			return Plan{}, shared.Errorf(shared.ErrPermission, field, root,
				"staged payload %s: payload root %s resolves to %s: a payload's root may not be the filesystem root",
				shared.Show(payloads[i].Name), root, shared.Show(res.Path))
		}
		realRoots[i] = res.Path
	}
	// For this machine, a payload's root is its local dir, canonicalised.
	if l.Local {
		for i := range roots {
			roots[i] = realRoots[i]
			resolved[roots[i]] = resolved[q.Resolve[1+i]]
		}
	}

	plan.Devices = append(plan.Devices, snapshot)
	for i, p := range payloads {
		file := q.Read[i]
		mres := a.Resolved[1+len(payloads)+i]
		if mres.Err != nil {
			// Where it lies is unknown, so its content cannot be trusted.
			return Plan{}, shared.Errorf(shared.ErrNotFound, "manifest", file,
				"staged payload %s: resolve manifest %s under payload root %s: %w", shared.Show(p.Name), file, realRoots[i], mres.Err)
		}
		if !Inside(mres.Path, realRoots[i]) {
			return Plan{}, shared.Errorf(shared.ErrPermission, "manifest", file,
				"staged payload %s: manifest %s resolves to %s, outside the payload's root %s", shared.Show(p.Name), file, shared.Show(mres.Path), realRoots[i])
		}
		f := a.Files[i]
		if f.Err != nil {
			return Plan{}, shared.Errorf(shared.ErrNotFound, "manifest", file,
				"staged payload %s: read manifest %s under payload root %s: %w", shared.Show(p.Name), file, roots[i], f.Err)
		}
		m, err := ParseManifest(f.Data, file, p.Name)
		if err != nil {
			return Plan{}, err
		}
		for _, mt := range m.Mounts {
			src := mt.Source(roots[i])
			if err := layout.CheckLengths("source", src); err != nil {
				return Plan{}, fmt.Errorf("staged payload %s mount %s: %w", shared.Show(p.Name), shared.Show(mt.Name), err)
			}
			plan.Devices = append(plan.Devices, Device{
				Name:      PayloadDeviceName(p.Name, mt.Name),
				Payload:   p.Name,
				Mount:     mt.Name,
				Source:    src,
				GuestPath: mt.GuestPath,
				ReadOnly:  mt.ReadOnly,
				root:      realRoots[i],
			})
		}
	}
	if err := checkUnique(plan.Devices); err != nil {
		return Plan{}, err
	}

	// Batch 2: sources below a root, when there are any.
	var more []string
	for _, d := range plan.Devices {
		if _, ok := resolved[d.Source]; !ok {
			more = append(more, d.Source)
			resolved[d.Source] = Resolved{}
		}
	}
	if len(more) > 0 {
		a, err := fetch(ctx, r, Query{Resolve: more})
		if err != nil {
			return Plan{}, err
		}
		for i, p := range more {
			resolved[p] = a.Resolved[i]
		}
	}

	for i := range plan.Devices {
		d := &plan.Devices[i]
		res := resolved[d.Source]
		switch {
		case res.Err != nil:
			return Plan{}, shared.Errorf(shared.ErrNotFound, "source", d.Source,
				"%s: resolve source %s on the remote host: %w", d.who(), d.Source, res.Err)
		case d.Payload != "" && !Inside(res.Path, d.root):
			// Checked before existence: where it points is the news.
			return Plan{}, shared.Errorf(shared.ErrPermission, "relative_path", d.Source,
				"%s: source %s resolves to %s, outside the payload's root %s: a payload may only share its own contents",
				d.who(), d.Source, shared.Show(res.Path), d.root)
		case !res.Exists:
			return Plan{}, shared.Errorf(shared.ErrNotFound, "source", d.Source,
				"%s: source %s does not exist on the remote host (resolved: %s)", d.who(), d.Source, res.Path)
		}
		d.Resolved = res.Path
	}
	return plan, nil
}

// Inside reports whether p lies in root, compared component by component,
// root itself included. Both are absolute and clean.
func Inside(p, root string) bool {
	if p == root || root == "/" {
		return strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, root+"/")
}

// CheckInstance refuses a plan that Incus would refuse on this instance: a
// planned device whose guest path is already used by another disk device of
// the instance (one of another name: a device of the same name is replaced).
// current is the instance's own devices.
func (p Plan) CheckInstance(current shared.Devices) error {
	planned := make(map[string]bool, len(p.Devices))
	for _, d := range p.Devices {
		planned[d.Name] = true
	}
	names := make([]string, 0, len(current))
	for name := range current {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, d := range p.Devices {
		gp := path.Clean(d.GuestPath)
		for _, name := range names {
			c := current[name]
			if planned[name] || c["type"] != "disk" || c["path"] == "" || path.Clean(c["path"]) != gp {
				continue
			}
			return shared.Errorf(shared.ErrConflict, "guest_path", d.GuestPath,
				"%s (device %s) needs guest path %s, already used by the instance's disk device %s",
				d.who(), d.Name, d.GuestPath, shared.Show(name))
		}
	}
	return nil
}

func fetch(ctx context.Context, r Remote, q Query) (Answer, error) {
	a, err := r.Fetch(ctx, q)
	if err != nil {
		return Answer{}, err
	}
	if len(a.Files) != len(q.Read) || len(a.Resolved) != len(q.Resolve) {
		return Answer{}, fmt.Errorf("remote answered %d files and %d paths for %d and %d asked: %w",
			len(a.Files), len(a.Resolved), len(q.Read), len(q.Resolve), errShortAnswer)
	}
	return a, nil
}

var errShortAnswer = errors.New("short answer")

// checkUnique refuses two devices with one name or one guest path.
func checkUnique(ds []Device) error {
	byName := make(map[string]int, len(ds))
	byPath := make(map[string]int, len(ds))
	for i, d := range ds {
		if j, ok := byName[d.Name]; ok {
			return shared.Errorf(shared.ErrInvalidInput, "device", d.Name,
				"%s and %s both map to device name %s", ds[j].who(), d.who(), d.Name)
		}
		byName[d.Name] = i
		gp := path.Clean(d.GuestPath)
		if j, ok := byPath[gp]; ok {
			return shared.Errorf(shared.ErrInvalidInput, "guest_path", d.GuestPath,
				"%s and %s both mount at guest path %s", ds[j].who(), d.who(), d.GuestPath)
		}
		byPath[gp] = i
	}
	return nil
}
