package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/strictjson"
)

// phase is one step of a job that `run` can run.
type phase struct {
	flag string // as --phases names it
	name string // as the report names it
	run  func(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error
}

var phases = []phase{
	{flag: "prepare-directories", name: "prepare_directories", run: runPrepare},
	{flag: "configure-devices", name: "configure_devices", run: runDevices},
}

const defaultPhases = "prepare-directories,configure-devices"

type runFlags struct {
	common
	jobFile   string
	plugin    string
	sshConfig string
	phases    []phase
	dryRun    bool
	json      bool
}

func parseRun(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var f runFlags
	var phaseList string
	fs := newFlagSet(app, "run", "--job FILE [--plugin-dir DIR] [--plugin NAME] [--ssh-config FILE] [--phases LIST] [--dry-run] [--json]")
	f.register(fs)
	fs.StringVar(&f.jobFile, "job", "", "JSON file with the job's `job`, `host` and `remote` objects (required)")
	fs.StringVar(&f.plugin, "plugin", "remote-linux-vm", "plugin to run the job with")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "OpenSSH client config the plugin reads (default ~/.ssh/config, which may be absent, as for ssh)")
	fs.StringVar(&phaseList, "phases", defaultPhases, "comma-separated phases to run, in order")
	fs.BoolVar(&f.dryRun, "dry-run", false, "change nothing; report what each phase would do")
	fs.BoolVar(&f.json, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if f.jobFile == "" {
		return nil, usagef("--job is required")
	}
	var err error
	if f.phases, err = parsePhases(phaseList); err != nil {
		return nil, err
	}
	if err := f.resolve(); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return app.runJob(ctx, f) }, nil
}

func parsePhases(list string) ([]phase, error) {
	var out []phase
	seen := map[string]bool{}
	for name := range strings.SplitSeq(list, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(phases, func(p phase) bool { return p.flag == name || p.name == name })
		if i < 0 {
			known := make([]string, len(phases))
			for j, p := range phases {
				known[j] = p.flag
			}
			return nil, usagef("--phases: unknown phase %q (known: %s)", name, strings.Join(known, ", "))
		}
		if seen[phases[i].flag] {
			return nil, usagef("--phases: %s given twice", phases[i].flag)
		}
		seen[phases[i].flag] = true
		out = append(out, phases[i])
	}
	return out, nil
}

// readJob reads a job file: the job, host and remote objects of a
// conformance case, nothing else.
func readJob(path string) (shared.JobSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return shared.JobSpec{}, fmt.Errorf("read job file: %w", err)
	}
	// Strictly, as SPEC says of every input: exact key spelling (a "ID"
	// beside "id" is refused, not read as the job id), no duplicate keys,
	// valid UTF-8, no unknown fields, nothing after the object.
	var spec shared.JobSpec
	if err := strictjson.Decode(data, &spec); err != nil {
		return shared.JobSpec{}, shared.Errorf(shared.ErrInvalidInput, "job", path, "job file %s: %w", path, err)
	}
	return spec, nil
}

// report is what `run --json` prints.
type report struct {
	Plugin shared.Info    `json:"plugin"`
	Phases []*phaseReport `json:"phases"`
}

type phaseReport struct {
	Phase      string    `json:"phase"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	DurationMS float64   `json:"duration_ms"`

	// prepare_directories
	Command     string   `json:"command,omitempty"`
	Directories []string `json:"directories,omitempty"`

	// configure_devices
	Instance string         `json:"instance,omitempty"`
	Project  string         `json:"project,omitempty"`
	Devices  shared.Devices `json:"devices,omitempty"`
	Changed  *bool          `json:"changed,omitempty"`
	Warnings []string       `json:"warnings,omitempty"`

	DryRun    bool   `json:"dry_run,omitempty"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"`
}

func runPrepare(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error {
	res, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec, DryRun: dryRun})
	r.Command, r.Directories, r.DryRun = res.Command, res.Directories, res.DryRun
	return err
}

func runDevices(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error {
	res, err := e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec, DryRun: dryRun})
	if err != nil {
		return err
	}
	r.Instance, r.Project, r.Devices, r.Warnings, r.DryRun = res.Instance, res.Project, res.Devices, res.Warnings, res.DryRun
	r.Changed = &res.Changed
	return nil
}

// runJob loads the plugin, runs the phases until one fails and reports
// every phase that ran.
func (a *App) runJob(ctx context.Context, f runFlags) error {
	spec, err := readJob(f.jobFile)
	if err != nil {
		return err
	}
	p, err := host.Open(ctx, host.Binary{Name: f.plugin, Path: filepath.Join(f.pluginDir, host.Prefix+f.plugin)}, host.Options{
		RequireSHA256: f.pins,
		Settings:      shared.Settings{SSHConfigPath: f.sshConfig},
		Logger:        f.logger(a.Stderr),
	})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	_, err = a.runPhases(ctx, p, spec, f)
	return err
}

// runPhases runs f.phases on a loaded plugin until one fails, prints each
// (or, with --json, the whole report) and returns the report.
func (a *App) runPhases(ctx context.Context, p *host.Plugin, spec shared.JobSpec, f runFlags) (report, error) {
	rep := report{Plugin: p.Info(), Phases: []*phaseReport{}}
	if !f.json {
		fmt.Fprintf(a.Stdout, "plugin %s %s protocol=%d\n", rep.Plugin.Name, rep.Plugin.Version, rep.Plugin.Protocol)
	}
	var runErr error
	for _, ph := range f.phases {
		r := &phaseReport{Phase: ph.name, StartedAt: time.Now()}
		err := ph.run(ctx, p, spec, f.dryRun, r)
		r.FinishedAt = time.Now()
		d := r.FinishedAt.Sub(r.StartedAt)
		r.DurationMS = float64(d.Microseconds()) / 1000
		if err != nil {
			r.Error = err.Error()
			if k := shared.KindOf(err); k != nil {
				r.ErrorKind = k.Error()
			}
			runErr = fmt.Errorf("phase %s: %w", ph.flag, err)
		}
		rep.Phases = append(rep.Phases, r)
		if !f.json {
			printPhase(a.Stdout, ph.flag, d, r)
		}
		if err != nil {
			break
		}
	}
	if f.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return rep, errors.Join(runErr, err)
		}
	}
	return rep, runErr
}

func printPhase(w io.Writer, name string, d time.Duration, r *phaseReport) {
	dry := ""
	if r.DryRun {
		dry = " (dry run)"
	}
	fmt.Fprintf(w, "%s%s: %v\n", name, dry, d.Round(time.Microsecond))
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", r.Error)
		return
	}
	if r.Command != "" {
		fmt.Fprintf(w, "  command: %s\n", r.Command)
	}
	if r.Instance != "" {
		changed := "unchanged"
		if r.Changed != nil && *r.Changed {
			changed = "changed"
		}
		fmt.Fprintf(w, "  instance: %s (project %s), %s\n", r.Instance, r.Project, changed)
	}
	printDevices(w, r.Devices)
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

// printDevices prints a device map, one device a line, keys sorted.
func printDevices(w io.Writer, devs shared.Devices) {
	for _, name := range slices.Sorted(maps.Keys(devs)) {
		cfg := devs[name]
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(cfg)) {
			kv = append(kv, k+"="+cfg[k])
		}
		fmt.Fprintf(w, "  device %s: %s\n", name, strings.Join(kv, " "))
	}
}
