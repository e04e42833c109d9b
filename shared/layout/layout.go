// Package layout derives a job's remote directories from its local paths, as
// docs/contract.md says: validation, the remote layout, the instance name and
// the one mkdir command that creates it all. It does no I/O.
package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strconv"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// Payload is one staged payload with its directories on both sides.
type Payload struct {
	Name      string // as given
	LocalDir  string // on the runner host
	Relative  string // LocalDir relative to the local job dir
	RemoteDir string // the remote job dir joined with Relative
}

// Layout is a job's remote layout. All paths are absolute and clean.
type Layout struct {
	RunID string
	JobID string

	WorkDir      string // W
	RunDir       string // W/runs/R
	JobDir       string // W/runs/R/jobs/J
	SnapshotDir  string // W/snapshots/<hash>/snapshot or W/runs/R/snapshot
	VMDir        string // W/runs/R/jobs/J/vm
	ArtifactsDir string // W/runs/R/jobs/J/artifacts
	CargoHome    string // W/cache/cargo-home
	CargoTarget  string // W/cache/cargo-target

	LocalJobDir string
	Payloads    []Payload

	// Instance is the Incus instance that runs the job.
	Instance string
	// Local is true when the remote host is this machine.
	Local bool
}

// Derive validates a job and computes its remote layout. A job that breaks
// the contract gets an *shared.Error of kind shared.ErrInvalidInput naming
// the offending value.
func Derive(spec shared.JobSpec) (Layout, error) {
	if err := CheckAbsClean("host.job_dir", spec.Host.JobDir); err != nil {
		return Layout{}, err
	}
	if err := CheckAbsClean("remote.work_dir", spec.Remote.WorkDir); err != nil {
		return Layout{}, err
	}
	runID, err := RunID(spec.Host.JobDir)
	if err != nil {
		return Layout{}, err
	}
	if err := CheckComponent("job.id", spec.Job.ID); err != nil {
		return Layout{}, err
	}
	hash := spec.Host.SnapshotContentHash
	if hash != "" {
		if err := CheckComponent("host.snapshot_content_hash", hash); err != nil {
			return Layout{}, err
		}
	}
	if spec.Remote.Host == "" {
		return Layout{}, shared.Errorf(shared.ErrInvalidInput, "remote.host", "", "remote.host is empty")
	}
	if err := spec.Remote.CheckCluster(); err != nil {
		return Layout{}, err
	}

	w := spec.Remote.WorkDir
	l := Layout{
		RunID:       runID,
		JobID:       spec.Job.ID,
		WorkDir:     w,
		RunDir:      path.Join(w, "runs", runID),
		CargoHome:   path.Join(w, "cache", "cargo-home"),
		CargoTarget: path.Join(w, "cache", "cargo-target"),
		LocalJobDir: spec.Host.JobDir,
		Instance:    InstanceName(runID, spec.Job.ID),
		Local:       shared.IsLocalHost(spec.Remote.Host),
	}
	l.JobDir = path.Join(l.RunDir, "jobs", spec.Job.ID)
	l.VMDir = path.Join(l.JobDir, shared.VMDirName)
	l.ArtifactsDir = path.Join(l.JobDir, shared.ArtifactsDirName)
	if spec.Job.Staged && hash != "" {
		l.SnapshotDir = path.Join(w, "snapshots", hash, "snapshot")
	} else {
		l.SnapshotDir = path.Join(l.RunDir, "snapshot")
	}

	l.Payloads = make([]Payload, 0, len(spec.Host.StagedPayloads))
	for i, p := range spec.Host.StagedPayloads {
		if err := CheckComponent(payloadField(i, "name"), p.Name); err != nil {
			return Layout{}, err
		}
		rel, err := RelativeInside(payloadField(i, "local_dir"), p.LocalDir, spec.Host.JobDir)
		if err != nil {
			return Layout{}, err
		}
		if own := ownDir(rel); own != "" {
			return Layout{}, shared.Errorf(shared.ErrInvalidInput, payloadField(i, "local_dir"), p.LocalDir,
				"%s %s is the job dir's %s dir or lies in it (%s): that dir is the executor's own, emptied and written by it; stage payloads beside it",
				payloadField(i, "local_dir"), shared.Show(p.LocalDir), own, shared.Show(path.Join(spec.Host.JobDir, own)))
		}
		l.Payloads = append(l.Payloads, Payload{
			Name:      p.Name,
			LocalDir:  p.LocalDir,
			Relative:  rel,
			RemoteDir: l.JobDir + "/" + rel,
		})
	}
	if err := l.checkLengths(); err != nil {
		return Layout{}, err
	}
	return l, nil
}

// checkLengths refuses any input or derived path that Linux could not
// create, before anything is created: a component over MaxComponent bytes
// or a path over MaxPath bytes.
func (l Layout) checkLengths() error {
	check := []struct{ field, p string }{
		{"host.job_dir", l.LocalJobDir},
		{"remote.work_dir", l.WorkDir},
		{"remote job dir", l.JobDir},
		{"remote snapshot dir", l.SnapshotDir},
		{"remote vm dir", l.VMDir},
		{"remote artifacts dir", l.ArtifactsDir},
	}
	for i, p := range l.Payloads {
		check = append(check,
			struct{ field, p string }{payloadField(i, "local_dir"), p.LocalDir},
			struct{ field, p string }{"remote dir of " + payloadField(i, "name"), p.RemoteDir})
	}
	for _, c := range check {
		if err := CheckLengths(c.field, c.p); err != nil {
			return err
		}
	}
	return nil
}

// OwnPlace is where p, a path below workDir, must resolve once workDir
// resolves to resolvedWork: the work dir may be a link, nothing below it
// may be (a link planted in runs/ or snapshots/ would lead a job's
// mount, or its removal, to a tree that is not the job's).
func OwnPlace(workDir, resolvedWork, p string) string {
	rel := strings.TrimPrefix(p, strings.TrimSuffix(workDir, "/")+"/")
	return path.Join(resolvedWork, rel)
}

// OwnDirs are the job dir's subdirs that the executor makes and owns, on
// the runner host and on the remote: a payload may not be one, or lie in
// one (the artifacts dir is emptied before each run and collected into).
var OwnDirs = []string{shared.ArtifactsDirName, shared.VMDirName}

// ownDir is the dir of OwnDirs that rel (relative to the job dir) is or
// lies in, "" for none.
func ownDir(rel string) string {
	for _, d := range OwnDirs {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return d
		}
	}
	return ""
}

func payloadField(i int, field string) string {
	return "host.staged_payloads[" + strconv.Itoa(i) + "]." + field
}

// Directories are the directories PrepareDirectories creates, in the order
// the contract gives: remote job dir, the snapshot dir's parent, vm,
// artifacts, the two cache dirs, then each staged payload's remote dir.
// Nothing is deduplicated or reordered.
func (l Layout) Directories() []string {
	dirs := make([]string, 0, 6+len(l.Payloads))
	dirs = append(dirs,
		l.JobDir,
		path.Dir(l.SnapshotDir),
		l.VMDir,
		l.ArtifactsDir,
		l.CargoHome,
		l.CargoTarget,
	)
	for _, p := range l.Payloads {
		dirs = append(dirs, p.RemoteDir)
	}
	return dirs
}

// MkdirCommand is the one command PrepareDirectories runs on the remote host.
func (l Layout) MkdirCommand() string {
	return MkdirCommand(l.Directories())
}

// MkdirCommand builds `set -euo pipefail; mkdir -p <dir> ...` with every
// directory single-quoted.
func MkdirCommand(dirs []string) string {
	const prefix = "set -euo pipefail; mkdir -p"
	n := len(prefix)
	for _, d := range dirs {
		n += len(d) + 3
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(prefix)
	for _, d := range dirs {
		b.WriteByte(' ')
		appendQuoted(&b, d)
	}
	return b.String()
}

// Quote single-quotes s for a POSIX shell: wrapped in '…', with every '
// inside written as '"'"'. The result is exactly one shell word equal to s
// for any s without NUL (a shell cannot carry NUL in a word at all).
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	appendQuoted(&b, s)
	return b.String()
}

func appendQuoted(b *strings.Builder, s string) {
	b.WriteByte('\'')
	for {
		i := strings.IndexByte(s, '\'')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		b.WriteString(`'"'"'`)
		s = s[i+1:]
	}
	b.WriteByte('\'')
}

// InstanceName is "pikaci-" followed by the first 12 hex digits of
// SHA-256 of "<run id>:<job id>".
func InstanceName(runID, jobID string) string {
	sum := sha256.Sum256([]byte(runID + ":" + jobID))
	return "pikaci-" + hex.EncodeToString(sum[:6])
}
