package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

func init() {
	verbs["sweep"] = Verb{
		Summary: "delete leftover job instances (labelled, older than an age, not live) and, with --work-dir, what old runs left on the remote disk",
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
	members   memberFlag
	dryRun    bool
	json      bool
}

func parseSweep(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	var f sweepFlags
	var olderThan string
	fs := newFlagSet(app, "sweep", "[--config FILE] [--ssh-config FILE] --host H --project P [--incus-endpoint URL] --older-than DURATION [--work-dir DIR [--member NAME=SSH_HOST]...] [--live FILE] [--dry-run] [--json]")
	f.register(fs)
	f.registerConfig(fs)
	fs.StringVar(&f.plugin, "plugin", "remote-linux-vm", "plugin to sweep with (it must speak protocol 2)")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "OpenSSH client config the plugin reads (default ~/.ssh/config)")
	fs.StringVar(&f.remote.Host, "host", "", "SSH host that runs the instances (required, unless the config file names remote.host)")
	fs.StringVar(&f.remote.Incus.Project, "project", "", "Incus project to sweep (required, unless the config file names remote.incus.project)")
	fs.StringVar(&f.remote.Incus.Endpoint, "incus-endpoint", "", "Incus API: unix:///path on the remote host or https://host:port (default unix://"+shared.DefaultIncusSocket+")")
	fs.StringVar(&olderThan, "older-than", "", "only instances created longer ago than this, a duration of at least 0 such as 6h or 90m (required)")
	fs.StringVar(&f.remote.WorkDir, "work-dir", "", "remote.work_dir: also remove the run dirs (runs/RUN), temporary snapshot dirs (.pikaci-sync-snapshot-*) and snapshot dirs (snapshots/HASH) under it unchanged or unused for --older-than that no live job holds; links are never followed")
	fs.Var(&f.members, "member", "NAME=SSH_HOST: a member of the Incus cluster behind --host and the SSH host of its work dir (repeatable); with --work-dir, each member's disk is swept")
	fs.StringVar(&f.liveFile, "live", "", "file listing the live jobs to keep, one RUN:JOB a line (# starts a comment)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "name the instances and paths, delete and remove none")
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
	if f.remote.WorkDir != "" {
		if err := shared.CheckAbsClean("--work-dir", f.remote.WorkDir); err != nil {
			return nil, usagef("%w", err)
		}
	}
	if len(f.members) > 0 {
		c := &shared.Cluster{Members: map[string]shared.ClusterMember{}}
		for name, h := range f.members {
			c.Members[name] = shared.ClusterMember{SSHHost: h}
		}
		f.remote.Incus.Cluster = c
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

// memberFlag is --member NAME=SSH_HOST, repeatable.
type memberFlag map[string]string

func (m *memberFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(*m)) {
		parts = append(parts, k+"="+(*m)[k])
	}
	return strings.Join(parts, ",")
}

func (m *memberFlag) Set(v string) error {
	name, h, ok := strings.Cut(v, "=")
	if !ok || name == "" || h == "" || strings.ContainsFunc(v, unicode.IsSpace) {
		return fmt.Errorf("%q is not NAME=SSH_HOST", v)
	}
	if *m == nil {
		*m = map[string]string{}
	}
	if old, dup := (*m)[name]; dup && old != h {
		return fmt.Errorf("member %s given twice, as %s and %s", name, old, h)
	}
	(*m)[name] = h
	return nil
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
		if err := shared.CheckLive([]string{line}); err != nil {
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
		// The config's endpoint is its host's: a --host naming another
		// host does not take it (an https endpoint would sweep the
		// config's host's instances, then the other host's disk).
		sameHost := f.remote.Host == "" || f.remote.Host == r.Host
		if f.remote.Host == "" {
			f.remote.Host = r.Host
		}
		if in := r.Incus; in != nil {
			if f.remote.Incus.Project == "" {
				f.remote.Incus.Project = in.Project
			}
			if f.remote.Incus.Endpoint == "" && sameHost {
				f.remote.Incus.Endpoint = in.Endpoint
				f.remote.Incus.ClientCert, f.remote.Incus.ClientKey, f.remote.Incus.ServerCert = in.ClientCert, in.ClientKey, in.ServerCert
			}
		}
	}
	return f.requireRemote()
}

func (a *App) sweep(ctx context.Context, f sweepFlags) error {
	if err := f.withConfig(a); err != nil {
		return err
	}
	req := shared.SweepRequest{Remote: f.remote, OlderThan: f.olderThan, DryRun: f.dryRun, WorkDir: f.remote.WorkDir}
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
		// Say what was done before the error.
		if len(res.Deleted)+len(res.Removed)+len(res.Skipped) > 0 {
			a.printSweep(f, req, res)
		}
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
	a.printSweep(f, req, res)
	return nil
}

// printSweep says, a line each, what a sweep deleted, removed and left.
func (a *App) printSweep(f sweepFlags, req shared.SweepRequest, res shared.SweepResult) {
	verb, rm := "deleted", "removed"
	if res.DryRun {
		verb, rm = "would delete", "would remove"
	}
	// Paths come from a remote listing: one holding a control character
	// is printed quoted and escaped, never raw to the terminal.
	for _, name := range res.Deleted {
		fmt.Fprintf(a.Stdout, "%s %s\n", verb, shared.ShowBare(name))
	}
	for _, p := range res.Removed {
		fmt.Fprintf(a.Stdout, "%s %s\n", rm, shared.ShowBare(p))
	}
	for _, p := range res.Skipped {
		fmt.Fprintf(a.Stdout, "left %s\n", shared.ShowBare(p))
	}
	for _, u := range res.Unreachable {
		fmt.Fprintf(a.Stdout, "left %s: its member did not answer\n", shared.ShowBare(u))
	}
	if len(res.Deleted) == 0 && len(res.Unreachable) == 0 {
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
	if req.WorkDir != "" && len(res.Removed) == 0 {
		fmt.Fprintf(a.Stdout, "nothing to remove: no run dir, temporary snapshot dir or snapshot dir under %s is older than %s and not live\n",
			shared.Show(req.WorkDir), f.olderThan)
	}
}
