package host

import (
	"maps"
	"slices"
	"strings"

	"github.com/pikaci/vmexec/shared"
)

// Plan is what a dry run found the whole job would do (Record.Plan): each
// phase's work as the plugin planned it from what the earlier phases would
// create. It never holds the value of an environment variable.
type Plan struct {
	Directories PlanDirectories `json:"directories"`
	Snapshot    PlanSnapshot    `json:"snapshot"`
	Instance    PlanInstance    `json:"instance"`
	Command     PlanCommand     `json:"command"`
	Artifacts   PlanArtifacts   `json:"artifacts"`
}

// PlanDirectories is PrepareDirectories' one command and what it creates.
type PlanDirectories struct {
	Host        string   `json:"host"`
	Command     string   `json:"command"`
	Directories []string `json:"directories"`
}

// PlanSnapshot is StageWorkspaceSnapshot's copy: host.snapshot_dir to the
// remote snapshot dir, or nothing when the remote already holds it
// (Reused).
type PlanSnapshot struct {
	Source      string `json:"source"`
	Host        string `json:"host"`
	Destination string `json:"destination"`
	ContentHash string `json:"content_hash"`
	Reused      bool   `json:"reused"`
}

// PlanInstance is PrepareRuntime's create request. Limits holds its
// limits.* config keys, Labels its user.* keys, Config any other.
type PlanInstance struct {
	Name     string            `json:"name"`
	Project  string            `json:"project"`
	Type     string            `json:"type"`
	Image    shared.Image      `json:"image"`
	Profiles []string          `json:"profiles"`
	Limits   map[string]string `json:"limits"`
	Labels   map[string]string `json:"labels"`
	Config   map[string]string `json:"config,omitempty"`
	Devices  []PlanDevice      `json:"devices"`
	Warnings []string          `json:"warnings,omitempty"`
}

// PlanDevice is one disk device of the create request: its source on the
// remote host (symlinks resolved), its path in the guest.
type PlanDevice struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
}

// PlanCommand is what RunJob would run: the environment's names only.
type PlanCommand struct {
	Argv        []string `json:"argv"`
	EnvNames    []string `json:"env_names"`
	Cwd         string   `json:"cwd"`
	User        int      `json:"user"`
	TimeoutSecs int      `json:"timeout_secs"`
}

// PlanArtifacts is what CollectArtifacts would copy, into Dir, and its caps.
type PlanArtifacts struct {
	Path        string `json:"path"`
	Dir         string `json:"dir"`
	MaxBytes    int64  `json:"max_bytes"`
	MaxFiles    int64  `json:"max_files"`
	TimeoutSecs int64  `json:"timeout_secs"`
}

// newPlan starts a dry run's plan with what the job itself says.
func newPlan(job shared.WholeJob) *Plan {
	c := job.Command.WithDefaults()
	a := job.ArtifactsOrDefault()
	names := slices.Sorted(maps.Keys(c.Env))
	if names == nil {
		names = []string{}
	}
	return &Plan{
		Command: PlanCommand{Argv: c.Argv, EnvNames: names, Cwd: c.Cwd, User: c.User, TimeoutSecs: c.TimeoutSecs},
		Artifacts: PlanArtifacts{Path: a.Path, Dir: shared.ArtifactsDirOf(job.Host.JobDir),
			MaxBytes: a.MaxBytes, MaxFiles: a.MaxFiles, TimeoutSecs: a.TimeoutSecs},
	}
}

// runtime fills the instance from PrepareRuntime's dry-run answer.
func (p *Plan) runtime(res shared.RuntimeResult) {
	in := PlanInstance{
		Name: res.Instance, Project: res.Project, Type: res.Type, Image: res.Image, Profiles: res.Profiles,
		Limits: map[string]string{}, Labels: map[string]string{}, Devices: []PlanDevice{}, Warnings: res.Warnings,
	}
	for k, v := range res.Config {
		switch {
		case strings.HasPrefix(k, "limits."):
			in.Limits[k] = v
		case strings.HasPrefix(k, "user."):
			in.Labels[k] = v
		default:
			if in.Config == nil {
				in.Config = map[string]string{}
			}
			in.Config[k] = v
		}
	}
	for _, name := range slices.Sorted(maps.Keys(res.Devices)) {
		d := res.Devices[name]
		in.Devices = append(in.Devices, PlanDevice{Name: name, Source: d["source"], Path: d["path"], ReadOnly: d["readonly"] == "true"})
	}
	p.Instance = in
}
