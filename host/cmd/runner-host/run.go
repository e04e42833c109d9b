package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/devices"
	"github.com/pikaci/vmexec/shared/layout"
)

// phase is one step of a job that `run` can run.
type phase struct {
	flag string // as --phases names it
	name string // as the report names it
	run  func(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error
	// check validates the phase's inputs as the contract defines them,
	// without I/O.
	check func(spec shared.JobSpec) error
}

var phases = []phase{
	{flag: "prepare-directories", name: "prepare_directories", run: runPrepare, check: checkPrepare},
	{flag: "configure-devices", name: "configure_devices", run: runDevices, check: checkDevices},
}

func checkPrepare(spec shared.JobSpec) error {
	_, err := layout.Derive(spec)
	return err
}

func checkDevices(spec shared.JobSpec) error {
	if _, err := devices.Check(spec); err != nil {
		return err
	}
	return shared.ValidateEndpoint(spec.Remote.Incus.Endpoint)
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
	quiet     bool
}

func parseRun(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	f, err := parseRunFlags(app, "run", args)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return app.runJob(ctx, f) }, nil
}

// parseRunFlags parses the flags of run, which check shares.
func parseRunFlags(app *App, verb string, args []string) (runFlags, error) {
	var f runFlags
	var phaseList string
	synopsis := "--job FILE [--config FILE] [--plugin-dir DIR] [--plugin NAME] [--ssh-config FILE] [--phases LIST] [--dry-run] [--json] [--quiet]"
	if verb == "check" {
		synopsis = "--job FILE [--config FILE] [--plugin-dir DIR] [--plugin NAME] [--ssh-config FILE] [--json]"
	}
	fs := newFlagSet(app, verb, synopsis)
	f.register(fs)
	f.registerConfig(fs)
	fs.StringVar(&f.jobFile, "job", "", "JSON file with the job's `job`, `host` and `remote` objects; with `runtime` and `command` (and optionally `artifacts`) as well, the whole job runs through protocol 2 (required)")
	fs.StringVar(&f.plugin, "plugin", "remote-linux-vm", "plugin to run the job with")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "OpenSSH client config the plugin reads (default ~/.ssh/config, which may be absent, as for ssh)")
	if verb == "check" {
		fs.BoolVar(&f.json, "json", false, "print the checks as JSON on stdout")
	} else {
		fs.StringVar(&phaseList, "phases", defaultPhases, "comma-separated phases to run, in order")
		fs.BoolVar(&f.dryRun, "dry-run", false, "change nothing; report what each phase would do")
		fs.BoolVar(&f.json, "json", false, "print the report (a whole job: the run record) as JSON on stdout; the job's output then goes to stderr, each line prefixed by its stream")
		fs.BoolVar(&f.quiet, "quiet", false, "print only the job's output and errors: no progress lines, no summary")
	}
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if err := noArgs(fs); err != nil {
		return f, err
	}
	if f.jobFile == "" {
		return f, usagef("--job is required")
	}
	if err := host.CheckName(f.plugin); err != nil {
		return f, usagef("--plugin: %w", err)
	}
	if verb != "check" {
		var err error
		if f.phases, err = parsePhases(phaseList); err != nil {
			return f, err
		}
	}
	return f, f.resolve(app)
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

	DryRun bool `json:"dry_run,omitempty"`
	// Check: this is the phase's check before the first phase ran, which
	// failed, so that no phase ran.
	Check     bool   `json:"check,omitempty"`
	Error     string `json:"error,omitempty"`
	ErrorKind string `json:"error_kind,omitempty"`
}

func runPrepare(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error {
	res, err := e.PrepareDirectories(ctx, shared.PrepareRequest{Spec: spec, DryRun: dryRun})
	r.Command, r.Directories, r.DryRun = res.Command, res.Directories, dryRun
	return err
}

func runDevices(ctx context.Context, e shared.Executor, spec shared.JobSpec, dryRun bool, r *phaseReport) error {
	res, err := e.ConfigureDevices(ctx, shared.DevicesRequest{Spec: spec, DryRun: dryRun})
	r.DryRun = dryRun
	if err != nil {
		return err
	}
	r.Instance, r.Project, r.Devices, r.Warnings = res.Instance, res.Project, res.Devices, res.Warnings
	r.Changed = &res.Changed
	return nil
}

// runJob loads the plugin, runs the phases until one fails and reports
// every phase that ran.
func (a *App) runJob(ctx context.Context, f runFlags) error {
	job, err := a.jobWithConfig(&f)
	if err != nil {
		return err
	}
	if job.IsWhole() {
		// v2: a job file with runtime and command runs the whole job (wholejob.go).
		return a.runWhole(ctx, f, job)
	}
	p, err := f.open(ctx, a.Stderr, f.plugin, shared.Settings{SSHConfigPath: f.sshConfig})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	_, err = a.runPhases(ctx, p, job.JobSpec, f)
	return err
}

// jobWithConfig reads the config file, if any (its settings go where no
// flag was given), and the job file with the config's values under it.
func (a *App) jobWithConfig(f *runFlags) (shared.WholeJob, error) {
	cfg, err := f.loadConfig(a)
	if err != nil {
		return shared.WholeJob{}, err
	}
	applySSHConfig(&f.sshConfig, cfg)
	return a.loadJob(f.jobFile, cfg)
}

// runPhases runs f.phases on a loaded plugin until one fails, prints each
// (or, with --json, the whole report) and returns the report.
//
// Unless it is a dry run, every phase is checked before the first one
// runs, so that a job that would fail a later phase on its input changes
// nothing (a job half done on the remote host is worse than one refused):
// first the contract's own checks (layout, devices, endpoint: no I/O), then
// the plugin's dry run of every phase after the first, which validates the
// rest (a plugin's own rules, the payload manifests, the instance's guest
// paths) and changes nothing. The first phase needs no dry run: the
// contract has every phase validate its input before it changes anything.
// A dry run reads only what already had to be there before the first phase
// (manifests, the snapshot, the instance): PrepareDirectories creates
// directories, nothing a later phase reads.
func (a *App) runPhases(ctx context.Context, p *host.Plugin, spec shared.JobSpec, f runFlags) (report, error) {
	rep := report{Plugin: p.Info(), Phases: []*phaseReport{}}
	if !f.json {
		fmt.Fprintf(a.Stdout, "plugin %s %s protocol=%d\n", rep.Plugin.Name, rep.Plugin.Version, rep.Plugin.Protocol)
	}
	runErr := a.checkPhases(ctx, p, spec, f, &rep)
	if runErr == nil {
		for _, ph := range f.phases {
			r := &phaseReport{Phase: ph.name, StartedAt: time.Now()}
			err := ph.run(ctx, p, spec, f.dryRun, r)
			a.finish(ph, r, err, f, &rep)
			if err != nil {
				runErr = fmt.Errorf("phase %s: %w", ph.flag, err)
				break
			}
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

// checkPhases checks every phase before the first runs (see runPhases) and
// reports the first that fails.
func (a *App) checkPhases(ctx context.Context, p *host.Plugin, spec shared.JobSpec, f runFlags, rep *report) error {
	if f.dryRun {
		return nil
	}
	for i, ph := range f.phases {
		r := &phaseReport{Phase: ph.name, StartedAt: time.Now(), Check: true}
		err := ph.check(spec)
		if err == nil && i > 0 {
			r.DryRun = true
			err = ph.run(ctx, p, spec, true, r)
			if err == nil {
				continue
			}
		}
		if err != nil {
			a.finish(ph, r, err, f, rep)
			return fmt.Errorf("phase %s, checked before the first phase ran (nothing was run): %w", ph.flag, err)
		}
	}
	return nil
}

// finish completes a phase's report, adds it to rep and prints it.
func (a *App) finish(ph phase, r *phaseReport, err error, f runFlags, rep *report) {
	r.FinishedAt = time.Now()
	d := r.FinishedAt.Sub(r.StartedAt)
	r.DurationMS = float64(d.Microseconds()) / 1000
	if err != nil {
		r.Error = err.Error()
		if k := shared.KindOf(err); k != nil {
			r.ErrorKind = k.Error()
		}
	}
	rep.Phases = append(rep.Phases, r)
	if !f.json {
		printPhase(a.Stdout, ph.flag, d, r)
	}
}

func printPhase(w io.Writer, name string, d time.Duration, r *phaseReport) {
	dry := ""
	switch {
	case r.Check && r.DryRun:
		dry = " (checked by a dry run before the first phase ran)"
	case r.Check:
		dry = " (checked before the first phase ran)"
	case r.DryRun:
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
