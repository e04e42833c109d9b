package shared

import (
	"context"
	"strings"
	"time"
)

// ProtocolWholeJob is the executor protocol that adds the whole job
// (contract version 2) to version 1's two calls.
const ProtocolWholeJob = 2

// JobExecutor is an Executor that runs the whole job (contract version 2):
// stage the workspace snapshot, create and start the instance, run the job
// with live output, collect its artifacts, clean up, and sweep leftovers.
//
// A host drives the calls in that order; it runs Cleanup after every job
// that reached PrepareRuntime, whatever happened before.
type JobExecutor interface {
	Executor
	// StageWorkspaceSnapshot puts host.snapshot_dir at the remote snapshot
	// dir, once per content hash.
	StageWorkspaceSnapshot(ctx context.Context, req StageRequest) (StageResult, error)
	// PrepareRuntime creates and starts the job's instance with its devices
	// and waits until it accepts an exec.
	PrepareRuntime(ctx context.Context, req RuntimeRequest) (RuntimeResult, error)
	// RunJob runs the job's command in the instance. Output reaches out as
	// it arrives, in order; a non-zero exit is a result, not an error.
	RunJob(ctx context.Context, req RunRequest, out OutputSink) (RunResult, error)
	// CollectArtifacts copies artifacts.path from the guest into
	// <host.job_dir>/artifacts/. A collection that fails part-way returns,
	// beside its error, the counts and warnings of what it copied.
	CollectArtifacts(ctx context.Context, req CollectRequest) (CollectResult, error)
	// Cleanup force-deletes the job's instance; it succeeds when the
	// instance is already gone.
	Cleanup(ctx context.Context, req CleanupRequest) (CleanupResult, error)
	// Sweep deletes labelled instances older than a given age whose job is
	// not live.
	Sweep(ctx context.Context, req SweepRequest) (SweepResult, error)
}

// Runtime says what instance runs the job. Zero fields take the defaults
// below (see WithDefaults).
type Runtime struct {
	// Image is the Incus image alias, in remote.incus.project.
	Image string `json:"image"`
	// InstanceType is one of InstanceTypes: InstanceTypeVirtualMachine
	// (default) or InstanceTypeContainer.
	InstanceType string `json:"instance_type,omitempty"`
	// Profiles follow DefaultProfile, in order.
	Profiles []string `json:"profiles,omitempty"`
	Limits   Limits   `json:"limits,omitempty"`
	// ReadyTimeoutSecs bounds the wait for the first successful exec.
	ReadyTimeoutSecs int `json:"ready_timeout_secs,omitempty"`
}

// Limits are an instance's resource limits.
type Limits struct {
	// CPU is a number of CPUs (default 2).
	CPU int `json:"cpu,omitempty"`
	// Memory is an Incus size string (default "4GiB").
	Memory string `json:"memory,omitempty"`
}

// Command is the job's process in the guest.
type Command struct {
	// Argv is run as is: no shell is added.
	Argv []string `json:"argv"`
	// Env is added to the image's environment.
	Env map[string]string `json:"env,omitempty"`
	// Cwd is the working directory (default /workspace/snapshot); it must
	// exist in the guest.
	Cwd string `json:"cwd,omitempty"`
	// User is the uid (default 0).
	User int `json:"user,omitempty"`
	// TimeoutSecs is the job's time limit; 0 means none.
	TimeoutSecs int `json:"timeout_secs,omitempty"`
}

// Artifacts says what to collect from the guest after the job.
type Artifacts struct {
	// Path is the guest directory (default DefaultArtifactsPath).
	Path string `json:"path,omitempty"`
	// MaxBytes caps the collected bytes (default 1 GiB).
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxFiles caps the entries collected or skipped: files, links,
	// directories and special files (default 10,000; at most 1,000,000).
	MaxFiles int64 `json:"max_files,omitempty"`
	// TimeoutSecs bounds the whole collection (default 600; at most
	// 86,400).
	TimeoutSecs int64 `json:"timeout_secs,omitempty"`
}

// Instance types, as Incus names them.
const (
	InstanceTypeVirtualMachine = "virtual-machine"
	InstanceTypeContainer      = "container"
)

// InstanceTypes are the runtime.instance_type values Runtime.Check
// accepts, in the order its error names them.
var InstanceTypes = []string{InstanceTypeVirtualMachine, InstanceTypeContainer}

// Defaults of the whole job's inputs.
const (
	// DefaultProject is the Incus project an empty remote.incus.project
	// means (see Incus.ProjectOrDefault).
	DefaultProject = "default"
	// DefaultProfile is the profile every instance gets before
	// runtime.profiles.
	DefaultProfile          = "default"
	DefaultInstanceType     = InstanceTypeVirtualMachine
	DefaultCPU              = 2
	DefaultMemory           = "4GiB"
	DefaultReadyTimeoutSecs = 120
	// SnapshotGuestPath is where the workspace snapshot appears in the
	// guest, and the command's default cwd.
	SnapshotGuestPath    = "/workspace/snapshot"
	DefaultCwd           = SnapshotGuestPath
	DefaultArtifactsPath = "/run/pika-cloud/artifacts"
	DefaultArtifactsMax  = int64(1) << 30
	// DefaultArtifactsMaxFiles and DefaultArtifactsTimeoutSecs bound a
	// collection's entries and time (see ranges.go for their ranges).
	DefaultArtifactsMaxFiles    = int64(10_000)
	DefaultArtifactsTimeoutSecs = int64(600)
	// CleanupTimeout is the host's own limit on Cleanup.
	CleanupTimeout = 60 * time.Second
	// KillGrace is the time between SIGTERM and SIGKILL on a timeout or
	// cancellation; ForceStopGrace the time after SIGKILL (or after the
	// main process exited by itself) before every other process of the
	// job is killed when the job's output is still open.
	KillGrace      = 10 * time.Second
	ForceStopGrace = 5 * time.Second
	// ReadyProbeFirst and ReadyProbeMax: PrepareRuntime's readiness
	// probe backs off from the first to the second.
	ReadyProbeFirst = 100 * time.Millisecond
	ReadyProbeMax   = time.Second
	// ArtifactReadTimeout bounds CollectArtifacts' read of one guest file
	// (a FIFO reported as a file never answers).
	ArtifactReadTimeout = 30 * time.Second
	// SnapshotMarker is the file in a snapshot dir that names its hash.
	SnapshotMarker = "pikaci-snapshot.json"
	// Label keys set on every instance the executor creates.
	LabelRun     = "user.pikaci.run"
	LabelJob     = "user.pikaci.job"
	LabelCreated = "user.pikaci.created"
	// LabelNonce is the run that created the instance; LabelHeartbeat
	// (RFC 3339) when that run last said it lives.
	LabelNonce     = "user.pikaci.nonce"
	LabelHeartbeat = "user.pikaci.heartbeat"
	// HeartbeatInterval is how often a live run refreshes its heartbeat;
	// after StaleAfter without one, the run is taken for dead and the next
	// run of the job deletes its instance.
	HeartbeatInterval = 30 * time.Second
	StaleAfter        = 90 * time.Second
	// LabelMember names, on a cluster, the member the job was placed on.
	LabelMember = "user.pikaci.member"
)

// WithDefaults returns r with every zero field set to its default.
func (r Runtime) WithDefaults() Runtime {
	if r.InstanceType == "" {
		r.InstanceType = DefaultInstanceType
	}
	if r.Limits.CPU == 0 {
		r.Limits.CPU = DefaultCPU
	}
	if r.Limits.Memory == "" {
		r.Limits.Memory = DefaultMemory
	}
	if r.ReadyTimeoutSecs == 0 {
		r.ReadyTimeoutSecs = DefaultReadyTimeoutSecs
	}
	return r
}

// WithDefaults returns c with every zero field set to its default.
func (c Command) WithDefaults() Command {
	if c.Cwd == "" {
		c.Cwd = DefaultCwd
	}
	return c
}

// WithDefaults returns a with every zero field set to its default.
func (a Artifacts) WithDefaults() Artifacts {
	if a.Path == "" {
		a.Path = DefaultArtifactsPath
	}
	if a.MaxBytes == 0 {
		a.MaxBytes = DefaultArtifactsMax
	}
	if a.MaxFiles == 0 {
		a.MaxFiles = DefaultArtifactsMaxFiles
	}
	if a.TimeoutSecs == 0 {
		a.TimeoutSecs = DefaultArtifactsTimeoutSecs
	}
	return a
}

// WholeJob is the input of the whole job: the v1 JobSpec (whose
// host.snapshot_dir names the local snapshot) plus the runtime, the command
// and the artifacts. A job file holds all six objects at the top level.
type WholeJob struct {
	JobSpec
	Runtime   *Runtime   `json:"runtime,omitempty"`
	Command   *Command   `json:"command,omitempty"`
	Artifacts *Artifacts `json:"artifacts,omitempty"`
}

// IsWhole reports whether the job asks for the whole job (it has a runtime
// and a command); a job without them runs the v1 phases only.
func (w WholeJob) IsWhole() bool { return w.Runtime != nil && w.Command != nil }

// StageRequest asks for the workspace snapshot on the remote host.
type StageRequest struct {
	Job    WholeJob `json:"job"`
	DryRun bool     `json:"dry_run,omitempty"`
}

// StageResult says what StageWorkspaceSnapshot did.
type StageResult struct {
	// SnapshotDir is the remote snapshot dir.
	SnapshotDir string `json:"snapshot_dir"`
	// ContentHash is the local snapshot's hash ("" when it has none).
	ContentHash string `json:"content_hash"`
	// Reused: a matching snapshot was already there; nothing was sent.
	Reused bool `json:"reused"`
	// BytesSent is the size of the tar stream sent (0 when reused).
	BytesSent int64 `json:"bytes_sent"`
	DryRun    bool  `json:"dry_run,omitempty"`
	// Placement is, on a cluster, the member the job was placed on.
	Placement *Placement `json:"placement,omitempty"`
}

// RuntimeRequest asks for the job's instance, created and started.
type RuntimeRequest struct {
	Job    WholeJob `json:"job"`
	DryRun bool     `json:"dry_run,omitempty"`
}

// Image identifies the image an instance was created from.
type Image struct {
	Project     string `json:"project"`
	Alias       string `json:"alias"`
	Fingerprint string `json:"fingerprint"`
}

// RuntimeResult is the instance PrepareRuntime created (or would create).
type RuntimeResult struct {
	Instance string `json:"instance"`
	Project  string `json:"project"`
	Image    Image  `json:"image"`
	// Type, Profiles, Config and Devices are exactly what the create
	// request carried.
	Type     string            `json:"type"`
	Profiles []string          `json:"profiles"`
	Config   map[string]string `json:"config"`
	Devices  Devices           `json:"devices"`
	// StaleDeleted: an instance of the same name was force-deleted first.
	StaleDeleted bool     `json:"stale_deleted,omitempty"`
	Warnings     []string `json:"warnings,omitempty"`
	DryRun       bool     `json:"dry_run,omitempty"`
	// Placement is, on a cluster, the member the instance was created on
	// (another one than staging's when the job was re-placed).
	Placement *Placement `json:"placement,omitempty"`
}

// RunRequest asks to run the job's command in its instance.
type RunRequest struct {
	Job WholeJob `json:"job"`
}

// Stream says which of the job's outputs a chunk came from.
type Stream int

// The job's two output streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "stream?"
}

// OutputChunk is one piece of the job's output, in the order it arrived.
type OutputChunk struct {
	Stream Stream
	Data   []byte
}

// OutputSink receives the job's output as it arrives. An error from it
// stops the job as a cancellation would.
type OutputSink func(OutputChunk) error

// RunResult is how the job ended.
type RunResult struct {
	ExitCode int  `json:"exit_code"`
	TimedOut bool `json:"timed_out"`
	// TimeoutSecs is the time limit that was applied (0: none).
	TimeoutSecs int `json:"timeout_secs,omitempty"`
}

// CollectRequest asks for the job's artifacts.
type CollectRequest struct {
	Job WholeJob `json:"job"`
}

// CollectResult says what CollectArtifacts copied.
type CollectResult struct {
	// Dir is <host.job_dir>/artifacts.
	Dir   string `json:"dir"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
	// Warnings name every skipped entry (a link leaving the tree, a FIFO).
	Warnings []string `json:"warnings,omitempty"`
}

// CleanupRequest asks to delete the job's instance.
type CleanupRequest struct {
	Job WholeJob `json:"job"`
}

// CleanupResult says what Cleanup did.
type CleanupResult struct {
	Instance string `json:"instance"`
	// Deleted: the instance existed and is gone now (false: it was
	// already gone).
	Deleted bool `json:"deleted"`
}

// SweepRequest asks to delete leftover instances on one remote host.
type SweepRequest struct {
	Remote Remote `json:"remote"`
	// OlderThan: only instances whose user.pikaci.created is older.
	OlderThan time.Duration `json:"older_than"`
	// Live lists "run:job" pairs that are running and must be kept.
	Live   []string `json:"live,omitempty"`
	DryRun bool     `json:"dry_run,omitempty"`
	// WorkDir, when set, also sweeps the remote disk under it (on a
	// cluster, on each member's ssh_host): run dirs (runs/<run>) and
	// temporary snapshot dirs (.pikaci-sync-snapshot-*) unchanged for
	// OlderThan whose run is not live, and snapshot dirs (snapshots/<hash>)
	// not used for that long that no live instance mounts. No link is
	// followed.
	WorkDir string `json:"work_dir,omitempty"`
}

// CheckLive refuses a Live entry that is not "run:job" with both parts
// non-empty: a bare run id would keep nothing, and its run dir would be
// swept under a job that runs. A run id or a job may hold ':' itself, so
// any ':' with something on each side will do.
func CheckLive(live []string) error {
	for i, l := range live {
		if len(l) < 3 || !strings.Contains(l[1:len(l)-1], ":") {
			return Errorf(ErrInvalidInput, "live", l, "live[%d] %s is not RUN:JOB", i, Show(l))
		}
	}
	return nil
}

// SweepResult names the instances deleted (or, for a dry run, that would
// be).
type SweepResult struct {
	Deleted []string `json:"deleted"`
	DryRun  bool     `json:"dry_run,omitempty"`
	// Unreachable names, as "<instance> on <member>", the instances of a
	// cluster member that does not answer: their labels cannot be read,
	// so they are left for a later sweep.
	Unreachable []string `json:"unreachable,omitempty"`
	// Removed are the remote paths removed under WorkDir (for a dry run:
	// that would be), each "<ssh host>:<path>", in the order removed.
	Removed []string `json:"removed,omitempty"`
	// Skipped are remote paths left alone and why, each
	// "<ssh host>:<path>: <why>": a link (never followed), a member whose
	// instances could not be listed.
	Skipped []string `json:"skipped,omitempty"`
}
