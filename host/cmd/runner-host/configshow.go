package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/pikaci/vmexec/shared"
)

func init() {
	verbs["config"] = Verb{
		Summary: "config show: print the job merged with the config file and the flags, with where each value came from",
		Parse:   parseConfig,
	}
}

type configShowFlags struct {
	runFlags
}

func parseConfig(_ context.Context, app *App, args []string) (func(context.Context) error, error) {
	const usage = "show --job FILE [--config FILE] [--json] [--plugin-dir DIR] [--ssh-config FILE] [--log-level L] [--log-format F] [--require-sha256 NAME=HEX]"
	switch {
	case len(args) > 0 && (args[0] == "-h" || args[0] == "--help"):
		args = []string{"show", "-h"} // help config: config show's flags
	case len(args) == 0:
		return nil, usagef("want config show, got nothing")
	case args[0] != "show":
		return nil, usagef("want config show, got %q", args[0])
	}
	var f configShowFlags
	fs := newFlagSet(app, "config", usage) // usage begins with "show"
	f.register(fs)
	f.registerConfig(fs)
	fs.StringVar(&f.jobFile, "job", "", "the job file to merge with the config (required; - reads stdin)")
	fs.StringVar(&f.sshConfig, "ssh-config", "", "OpenSSH client config the plugin reads (default ~/.ssh/config)")
	fs.BoolVar(&f.json, "json", false, "print the merged job and each value's source as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if err := noArgs(fs); err != nil {
		return nil, err
	}
	if f.jobFile == "" {
		return nil, usagef("--job is required")
	}
	if err := f.resolve(app); err != nil {
		return nil, err
	}
	return func(context.Context) error { return app.configShow(f) }, nil
}

// sourcedValue is one value of the merged job or of the settings, and
// where it came from: "default", "config FILE:LINE", "job FILE" or
// "flag --NAME".
type sourcedValue struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	From  string          `json:"from"`
}

// shownConfig is what config show --json prints.
type shownConfig struct {
	// Job is the merged job as the plugin gets it, with the contract's
	// defaults filled in.
	Job    shared.WholeJob `json:"job"`
	Values []sourcedValue  `json:"values"`
}

func (a *App) configShow(f configShowFlags) error {
	cfg, err := f.loadConfig(a)
	if err != nil {
		return err
	}
	sshFromFlag := f.sshConfig != ""
	applySSHConfig(&f.sshConfig, cfg)
	raw, err := a.readJobRaw(f.jobFile)
	if err != nil {
		return err
	}
	jobName := f.jobFile
	if jobName == "-" {
		jobName = "<stdin>"
	}
	merged, err := mergeJob(raw, cfg)
	if err != nil {
		return err
	}
	if err := checkJobKind(merged, jobName, cfg); err != nil {
		return err
	}
	shown := hideEnvValues(withDefaults(merged))

	jobKeys, err := flatKeys(raw)
	if err != nil {
		return err
	}
	all, err := flatten(shown)
	if err != nil {
		return err
	}
	var values []sourcedValue
	for _, kv := range all {
		from := "default"
		switch {
		case jobKeys[kv.key]:
			from = "job " + jobName
		case cfg != nil && hasKey(cfg.job, kv.key):
			from = cfg.where(kv.key)
		}
		values = append(values, sourcedValue{Key: kv.key, Value: kv.value, From: from})
	}
	values = append(values, f.settings(cfg, sshFromFlag)...)

	if f.json {
		enc := json.NewEncoder(a.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(shownConfig{Job: shown, Values: values})
	}
	// KEY  FROM  VALUE: the value last, as it may be long (an argv).
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	for _, v := range values {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", shared.ShowBare(v.Key), shared.ShowBare(v.From), v.Value)
	}
	return tw.Flush()
}

// settings are the runner's own values: plugin dir, pins, ssh config, log
// level and format.
func (f *configShowFlags) settings(cfg *runnerConfig, sshFromFlag bool) []sourcedValue {
	var out []sourcedValue
	add := func(key string, v any, flagName string, fromConfig bool) {
		from := "default"
		switch {
		case f.set[flagName] || (flagName == "ssh-config" && sshFromFlag):
			from = "flag --" + flagName
		case fromConfig:
			from = cfg.where(key)
		}
		out = append(out, sourcedValue{Key: key, Value: mustJSON(v), From: from})
	}
	var file fileConfig
	if cfg != nil {
		file = cfg.file
	}
	ssh := f.sshConfig
	if ssh == "" {
		ssh = "~/.ssh/config"
	}
	add("plugin_dir", f.pluginDir, "plugin-dir", file.PluginDir != "")
	add("ssh_config", ssh, "ssh-config", file.SSHConfig != "")
	add("log_level", f.logLevel, "log-level", file.LogLevel != "")
	add("log_format", f.logFormat, "log-format", file.LogFormat != "")
	for _, name := range slices.Sorted(maps.Keys(f.pins)) {
		key, from := "require_sha256."+name, "flag --require-sha256"
		if sum, ok := file.RequireSHA256[name]; ok && strings.EqualFold(sum, f.pins[name]) {
			from = cfg.where(key)
		}
		out = append(out, sourcedValue{Key: key, Value: mustJSON(f.pins[name]), From: from})
	}
	return out
}

// mustJSON is v as compact JSON, with no HTML escaping (an argv's "&&"
// stays readable).
func mustJSON(v any) json.RawMessage {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return json.RawMessage(strings.TrimSuffix(b.String(), "\n"))
}

// withDefaults is the job as the plugin reads it: every zero value that
// stands for a default replaced by the default.
func withDefaults(job shared.WholeJob) shared.WholeJob {
	job.Remote.Incus.Project = job.Remote.Incus.ProjectOrDefault()
	job.Remote.Incus.Endpoint = job.Remote.Incus.EndpointOrDefault()
	if job.Runtime != nil {
		rt := job.Runtime.WithDefaults()
		job.Runtime = &rt
	}
	if job.Command != nil {
		c := job.Command.WithDefaults()
		job.Command = &c
	}
	if job.IsWhole() {
		a := job.ArtifactsOrDefault()
		job.Artifacts = &a
	}
	return job
}

// hideEnvValues replaces each command.env value by its length: a job's
// environment often holds tokens, and config show's output lands in logs.
// The names stay, and where each came from.
func hideEnvValues(job shared.WholeJob) shared.WholeJob {
	if job.Command == nil || len(job.Command.Env) == 0 {
		return job
	}
	c := *job.Command
	c.Env = make(map[string]string, len(job.Command.Env))
	for k, v := range job.Command.Env {
		c.Env[k] = fmt.Sprintf("(%d bytes, not shown)", len(v))
	}
	job.Command = &c
	return job
}

type flatValue struct {
	key   string
	value json.RawMessage
}

// flatten lists v's leaves (arrays are leaves) as dotted keys, in the
// order of the JSON encoding's keys, sorted at each level.
func flatten(v any) ([]flatValue, error) {
	m, err := toMap(v)
	if err != nil {
		return nil, err
	}
	var out []flatValue
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok && (len(m) > 0 || prefix == "") {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				walk(key, m[k])
			}
			return
		}
		out = append(out, flatValue{key: prefix, value: mustJSON(v)})
	}
	walk("", m)
	return out, nil
}

// flatKeys is the set of keys of v's leaves that are not zero.
func flatKeys(v any) (map[string]bool, error) {
	m, err := toMap(v)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, sv := range m {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				walk(key, sv)
			}
			return
		}
		if !isZero(v) {
			out[prefix] = true
		}
	}
	walk("", m)
	return out, nil
}

// hasKey reports whether the dotted key names a value in m.
func hasKey(m map[string]any, key string) bool {
	var v any = m
	for part := range strings.SplitSeq(key, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = mm[part]; !ok {
			return false
		}
	}
	_, isMap := v.(map[string]any)
	return !isMap
}
