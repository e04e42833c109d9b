package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

func init() {
	verbs["sweep"] = Verb{
		Summary: "delete leftover job instances: labelled, older than an age, not live",
		Parse:   parseSweep,
	}
}

type sweepFlags struct {
	common
	plugin    string
	sshConfig string
	remote    shared.Remote
	olderThan time.Duration
	liveFile  string
	dryRun    bool
	json      bool
}

func parseSweep(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var f sweepFlags
	var olderThan string
	fs := newFlagSet(app, "sweep", "[--config FILE] --ssh-config FILE --host H --project P --older-than DURATION [--live FILE] [--dry-run] [--json]")
	f.register(fs)
	f.registerConfig(fs)
	fs.StringVar(&f.plugin, "plugin", "remote-linux-vm", "plugin to sweep with (it must speak protocol 2)")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "OpenSSH client config the plugin reads (default ~/.ssh/config)")
	fs.StringVar(&f.remote.Host, "host", "", "SSH host that runs the instances (required, unless the config file names remote.host)")
	fs.StringVar(&f.remote.Incus.Project, "project", "", "Incus project to sweep (required, unless the config file names remote.incus.project)")
	fs.StringVar(&f.remote.Incus.Endpoint, "incus-endpoint", "", "Incus API: unix:///path on the remote host or https://host:port (default unix://"+shared.DefaultIncusSocket+")")
	fs.StringVar(&olderThan, "older-than", "", "only instances created longer ago than this, a duration of at least 0 such as 6h or 90m (required)")
	fs.StringVar(&f.liveFile, "live", "", "file listing the live jobs to keep, one RUN:JOB a line (# starts a comment)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "name the instances, delete none")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if err := f.resolve(app); err != nil {
		return nil, err
	}
	// With a config file, its [remote] may name the host and project
	// (checked once it is read).
	if f.configPath(app) == "" {
		if err := f.requireRemote(); err != nil {
			return nil, err
		}
	}
	switch {
	case olderThan == "":
		return nil, usagef("--older-than is required (a duration such as 6h, at least 0)")
	}
	if err := host.CheckName(f.plugin); err != nil {
		return nil, usagef("--plugin: %w", err)
	}
	d, err := time.ParseDuration(olderThan)
	switch {
	case err != nil:
		return nil, usagef("--older-than %q is not a duration (such as 6h, 90m or 1h30m)", olderThan)
	case d < 0:
		return nil, usagef("--older-than %q is negative: want a duration of at least 0, such as 6h", olderThan)
	}
	f.olderThan = d
	return func(ctx context.Context) error { return app.sweep(ctx, f) }, nil
}

// readLive reads a list of live jobs: one "run:job" a line; blank lines
// and lines starting with # are skipped.
func readLive(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --live file: %w", err)
	}
	live := []string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		run, job, ok := strings.Cut(line, ":")
		if !ok || run == "" || job == "" {
			return nil, shared.Errorf(shared.ErrInvalidInput, "live", line, "%s line %d: %s is not RUN:JOB", path, n, shared.Show(line))
		}
		live = append(live, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read --live file %s: %w", path, err)
	}
	return live, nil
}

// requireRemote refuses a sweep without a host or a project.
func (f *sweepFlags) requireRemote() error {
	switch {
	case f.remote.Host == "":
		return usagef("--host is required (or remote.host in the config file)")
	case f.remote.Incus.Project == "":
		return usagef("--project is required (or remote.incus.project in the config file)")
	}
	return nil
}

// withConfig reads the config file, if any: its settings and its [remote]
// go where no flag was given.
func (f *sweepFlags) withConfig(app *App) error {
	cfg, err := f.loadConfig(app)
	if err != nil || cfg == nil {
		return err
	}
	applySSHConfig(&f.sshConfig, cfg)
	if r := cfg.file.Remote; r != nil {
		if f.remote.Host == "" {
			f.remote.Host = r.Host
		}
		if in := r.Incus; in != nil {
			if f.remote.Incus.Project == "" {
				f.remote.Incus.Project = in.Project
			}
			if f.remote.Incus.Endpoint == "" {
				f.remote.Incus.Endpoint = in.Endpoint
				f.remote.Incus.ClientCert, f.remote.Incus.ClientKey, f.remote.Incus.ServerCert = in.ClientCert, in.ClientKey, in.ServerCert
			}
		}
	}
	if err := f.requireRemote(); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	return nil
}

func (a *App) sweep(ctx context.Context, f sweepFlags) error {
	if err := f.withConfig(a); err != nil {
		return err
	}
	req := shared.SweepRequest{Remote: f.remote, OlderThan: f.olderThan, DryRun: f.dryRun}
	if f.liveFile != "" {
		live, err := readLive(f.liveFile)
		if err != nil {
			return err
		}
		req.Live = live
	}
	p, err := f.open(ctx, a.Stderr, f.plugin, shared.Settings{SSHConfigPath: f.sshConfig})
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	res, err := p.Sweep(ctx, req)
	if err != nil {
		return err
	}
	if res.Deleted == nil {
		res.Deleted = []string{}
	}
	if f.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	for _, name := range res.Deleted {
		fmt.Fprintf(a.Stdout, "%s %s\n", verb, name)
	}
	if len(res.Deleted) == 0 {
		// Say what was looked at, so that an empty answer is not mistaken
		// for a sweep of the wrong project or host.
		project := f.remote.Incus.ProjectOrDefault()
		live := "no live jobs given"
		if f.liveFile != "" {
			live = fmt.Sprintf("%d live jobs kept (%s)", len(req.Live), f.liveFile)
		}
		fmt.Fprintf(a.Stdout, "nothing to delete: no instance in project %s on host %s is labelled %s, created more than %s ago and not live (%s)\n",
			shared.Show(project), shared.Show(f.remote.Host), shared.LabelRun, f.olderThan, live)
	}
	return nil
}
