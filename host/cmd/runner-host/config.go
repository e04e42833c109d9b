package main

// The runner's config file (--config FILE, or $VMEXEC_CONFIG): the values
// that are the same for every job on a runner, in TOML. A job file's
// values win over it; a flag wins over both where there is one.
//
// It is read as strictly as a job file: every key must be one this file's
// schema names, spelled exactly (TOML keys are case-sensitive; the decoder
// would match them without case), and an unknown key is an error naming it
// with its line and a "did you mean". Every value goes through the checks
// a job file's goes through (shared's), and an error names the file, the
// line and the value.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
	"github.com/pikaci/vmexec/shared/strictjson"
)

// envConfig names the config file when --config is not given.
const envConfig = "VMEXEC_CONFIG"

// maxConfigFile bounds the config file read.
const maxConfigFile = 1 << 20

// fileConfig is the config file's schema. Under [remote], [runtime] and
// [artifacts] the keys are the job file's own (docs: README, "The config
// file").
type fileConfig struct {
	PluginDir     string            `toml:"plugin_dir"`
	RequireSHA256 map[string]string `toml:"require_sha256"`
	SSHConfig     string            `toml:"ssh_config"`
	LogLevel      string            `toml:"log_level"`
	LogFormat     string            `toml:"log_format"`
	Remote        *configRemote     `toml:"remote"`
	Runtime       *configRuntime    `toml:"runtime"`
	Artifacts     *configArtifacts  `toml:"artifacts"`
}

type configRemote struct {
	Host    string       `toml:"host"`
	WorkDir string       `toml:"work_dir"`
	Incus   *configIncus `toml:"incus"`
}

type configIncus struct {
	Project    string `toml:"project"`
	Endpoint   string `toml:"endpoint"`
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
	ServerCert string `toml:"server_cert"`
}

type configRuntime struct {
	Image            string        `toml:"image"`
	InstanceType     string        `toml:"instance_type"`
	Profiles         []string      `toml:"profiles"`
	Limits           *configLimits `toml:"limits"`
	ReadyTimeoutSecs int           `toml:"ready_timeout_secs"`
}

type configLimits struct {
	CPU    int    `toml:"cpu"`
	Memory string `toml:"memory"`
}

type configArtifacts struct {
	Path        string `toml:"path"`
	MaxBytes    int64  `toml:"max_bytes"`
	MaxFiles    int64  `toml:"max_files"`
	TimeoutSecs int64  `toml:"timeout_secs"`
}

// runnerConfig is a config file read and checked.
type runnerConfig struct {
	path  string // as given
	file  fileConfig
	lines map[string]int // dotted key (as in the file) -> its line
	// job holds the file's remote, runtime and artifacts as a job file's
	// objects would (JSON names), only the values the file sets.
	job map[string]any
}

// where names a key of the file as config show does: "config FILE:LINE".
func (c *runnerConfig) where(key string) string {
	if n := c.line(key); n > 0 {
		return fmt.Sprintf("config %s:%d", c.path, n)
	}
	return "config " + c.path
}

// line is the line of a key of the file, or of the nearest table holding
// it; 0 when unknown.
func (c *runnerConfig) line(key string) int {
	for k := key; k != ""; {
		if n, ok := c.lines[k]; ok {
			return n
		}
		if i := strings.IndexByte(k, '['); i >= 0 {
			k = k[:i]
			continue
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// configPath is the config file to read: --config, else $VMEXEC_CONFIG,
// else none ("").
func (c *common) configPath(app *App) string {
	if c.config != "" {
		return c.config
	}
	return app.getenv(envConfig)
}

// loadConfig reads the config file (none: nil) and applies its settings
// (plugin dir, pins, log level and format) where no flag was given.
func (c *common) loadConfig(app *App) (*runnerConfig, error) {
	path := c.configPath(app)
	if path == "" {
		return nil, nil
	}
	cfg, err := readConfig(path)
	if err != nil {
		if c.config == "" {
			return nil, fmt.Errorf("$%s: %w", envConfig, err)
		}
		return nil, err
	}
	f := cfg.file
	if f.PluginDir != "" && !c.set["plugin-dir"] {
		c.pluginDir = f.PluginDir
	}
	if f.LogLevel != "" && !c.set["log-level"] {
		c.logLevel = f.LogLevel
	}
	if f.LogFormat != "" && !c.set["log-format"] {
		c.logFormat = f.LogFormat
	}
	for name, sum := range f.RequireSHA256 {
		if _, flagged := c.pins[name]; !flagged {
			if c.pins == nil {
				c.pins = pinFlag{}
			}
			c.pins[name] = strings.ToLower(sum)
		}
	}
	return cfg, nil
}

// readConfig reads and checks a config file.
func readConfig(path string) (*runnerConfig, error) {
	// O_NONBLOCK: a FIFO opens without waiting for a writer, and is then
	// refused with anything else that is not a regular file.
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "config", path, "read config file: %w", err)
	}
	defer func() { _ = fh.Close() }()
	if fi, err := fh.Stat(); err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "config", path, "read config file: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, shared.Errorf(shared.ErrInvalidInput, "config", path, "config file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxConfigFile+1))
	if err != nil {
		return nil, shared.Errorf(shared.ErrInvalidInput, "config", path, "read config file %s: %w", path, err)
	}
	if len(data) > maxConfigFile {
		return nil, shared.Errorf(shared.ErrInvalidInput, "config", path, "config file %s is over %d bytes", path, maxConfigFile)
	}
	return decodeConfig(data, path)
}

// decodeConfig decodes a config file's content; path names it in errors
// and anchors its relative paths.
func decodeConfig(data []byte, path string) (*runnerConfig, error) {
	bad := func(format string, args ...any) error {
		return shared.Errorf(shared.ErrInvalidInput, "config", path, "config %s, "+format, append([]any{path}, args...)...)
	}
	cfg := &runnerConfig{path: path, lines: map[string]int{}}
	// Every key, with its line, exactly as written.
	keys, err := configKeys(data)
	if err != nil {
		// Not TOML: the decoder says where, with a line and column.
		if derr := toml.Unmarshal(data, &fileConfig{}); derr != nil {
			err = derr
		}
		return nil, tomlError(path, err)
	}
	for _, k := range keys {
		if _, seen := cfg.lines[k.dotted]; !seen {
			cfg.lines[k.dotted] = k.line
		}
		if msg := checkConfigKey(k.parts); msg != "" {
			return nil, bad("line %d: %s", k.line, msg)
		}
	}
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&cfg.file); err != nil {
		return nil, tomlError(path, err)
	}
	if err := cfg.resolvePaths(); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	job, err := cfg.jobObjects()
	if err != nil {
		return nil, err
	}
	cfg.job = job
	return cfg, nil
}

// tomlError names the file, line and column of a TOML error.
func tomlError(path string, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if m := goTypeInMessage.FindStringSubmatch(msg); m != nil {
			// Name the TOML type and what the key wants, not our Go field.
			msg = "a TOML " + m[1] + " cannot go into " + m[2]
		}
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return shared.Errorf(shared.ErrInvalidInput, "config", path, "config %s, line %d, column %d: %s", path, row, col, msg)
	}
	return shared.Errorf(shared.ErrInvalidInput, "config", path, "config %s: %w", path, err)
}

// goTypeInMessage matches go-toml's type error, which names our Go field.
var goTypeInMessage = regexp.MustCompile(`cannot decode TOML (\S+) into .* of type (\S+)`)

// configKey is one key of the file: a table header or a key/value.
type configKey struct {
	parts  []string
	dotted string
	line   int
}

// configKeys lists every key of a TOML document with its line, table
// headers included, inline tables walked.
func configKeys(data []byte) ([]configKey, error) {
	var p unstable.Parser
	p.Reset(data)
	var out []configKey
	var table []string
	add := func(parts []string, n *unstable.Node) {
		line := 0
		if n != nil {
			line = p.Shape(n.Raw).Start.Line
		}
		out = append(out, configKey{parts: parts, dotted: strings.Join(parts, "."), line: line})
	}
	var keyval func(prefix []string, n *unstable.Node)
	keyval = func(prefix []string, n *unstable.Node) {
		parts := slicesClone(prefix)
		var first *unstable.Node
		for it := n.Key(); it.Next(); {
			k := it.Node()
			if first == nil {
				first = k
			}
			parts = append(parts, string(k.Data))
		}
		add(parts, first)
		if v := n.Value(); v.Kind == unstable.InlineTable {
			for it := v.Children(); it.Next(); {
				keyval(parts, it.Node())
			}
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = table[:0]
			var first *unstable.Node
			for it := e.Key(); it.Next(); {
				if first == nil {
					first = it.Node()
				}
				table = append(table, string(it.Node().Data))
			}
			add(slicesClone(table), first)
		case unstable.KeyValue:
			keyval(table, e)
		}
	}
	return out, p.Error()
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// checkConfigKey says what is wrong with a key of the file ("" when it is
// one the schema names).
func checkConfigKey(parts []string) string {
	t := reflect.TypeFor[fileConfig]()
	for i, part := range parts {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
			continue
		case reflect.Struct:
		default:
			return fmt.Sprintf("key %s: %s holds a value, not a table", strconv.Quote(strings.Join(parts, ".")), strings.Join(parts[:i], "."))
		}
		names := tomlNames(t)
		ft, ok := names[part]
		if !ok {
			known := make([]string, 0, len(names))
			for n := range names {
				known = append(known, n)
			}
			msg := "unknown key " + strconv.Quote(strings.Join(parts, "."))
			if near := strictjson.Suggest(part, known); near != "" {
				msg += " (did you mean " + strconv.Quote(strings.Join(append(slicesClone(parts[:i]), near), ".")) + "?)"
			}
			return msg
		}
		t = ft
	}
	return ""
}

// tomlNames maps a struct's toml keys to their types.
func tomlNames(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			out[name] = f.Type
		}
	}
	return out
}

// resolvePaths makes the file's local paths absolute: a relative one is
// relative to the file's own folder.
func (c *runnerConfig) resolvePaths() error {
	dir, err := filepath.Abs(filepath.Dir(c.path))
	if err != nil {
		return fmt.Errorf("config %s: %w", c.path, err)
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	f := &c.file
	abs(&f.PluginDir)
	abs(&f.SSHConfig)
	if f.Remote != nil && f.Remote.Incus != nil {
		abs(&f.Remote.Incus.ClientCert)
		abs(&f.Remote.Incus.ClientKey)
		abs(&f.Remote.Incus.ServerCert)
	}
	return nil
}

// check runs every value through the checks a job file's value (or the
// matching flag's) goes through; an error names the file and the line.
func (c *runnerConfig) check() error {
	at := func(key string, err error) error {
		if err == nil {
			return nil
		}
		value := ""
		if se, ok := errors.AsType[*shared.Error](err); ok && se.Field != "" {
			key, value = se.Field, se.Value
		}
		if n := c.line(key); n > 0 {
			return shared.Errorf(shared.ErrInvalidInput, key, value, "config %s, line %d: %w", c.path, n, err)
		}
		return shared.Errorf(shared.ErrInvalidInput, key, value, "config %s: %w", c.path, err)
	}
	f := c.file
	if f.LogLevel != "" && hclog.LevelFromString(f.LogLevel) == hclog.NoLevel {
		return at("log_level", fmt.Errorf("log_level %q: want trace, debug, info, warn, error or off", f.LogLevel))
	}
	if f.LogFormat != "" && f.LogFormat != "text" && f.LogFormat != "json" {
		return at("log_format", fmt.Errorf("log_format %q: want text or json", f.LogFormat))
	}
	var pins pinFlag
	for name, sum := range f.RequireSHA256 {
		if err := pins.Set(name + "=" + sum); err != nil {
			return at("require_sha256."+name, fmt.Errorf("require_sha256 %q = %q: %w", name, sum, err))
		}
	}
	if r := f.Remote; r != nil {
		if r.Host != "" {
			if err := at("remote.host", shared.CheckToken("remote.host", r.Host)); err != nil {
				return err
			}
		}
		if r.WorkDir != "" {
			if err := at("remote.work_dir", shared.CheckAbsClean("remote.work_dir", r.WorkDir)); err != nil {
				return err
			}
			if err := at("remote.work_dir", layout.CheckLengths("remote.work_dir", r.WorkDir)); err != nil {
				return err
			}
		}
		if in := r.Incus; in != nil {
			if in.Project != "" {
				if err := at("remote.incus.project", shared.CheckToken("remote.incus.project", in.Project)); err != nil {
					return err
				}
			}
			if err := at("remote.incus.endpoint", shared.ValidateEndpoint(in.Endpoint)); err != nil {
				return err
			}
			for _, p := range []struct{ key, v string }{
				{"remote.incus.client_cert", in.ClientCert}, {"remote.incus.client_key", in.ClientKey}, {"remote.incus.server_cert", in.ServerCert},
			} {
				if p.v != "" {
					if err := at(p.key, shared.CheckAbsClean(p.key, p.v)); err != nil {
						return err
					}
				}
			}
		}
	}
	if rt := c.runtime(); rt != nil {
		probe := *rt
		if probe.Image == "" {
			probe.Image = "unset" // the job names it; every other value is checked
		}
		if err := at("runtime", probe.Check()); err != nil {
			return err
		}
	}
	if a := c.artifacts(); a != nil {
		if err := at("artifacts", a.Check()); err != nil {
			return err
		}
	}
	return nil
}

func (c *runnerConfig) runtime() *shared.Runtime {
	rt := c.file.Runtime
	if rt == nil {
		return nil
	}
	out := &shared.Runtime{Image: rt.Image, InstanceType: rt.InstanceType, Profiles: rt.Profiles, ReadyTimeoutSecs: rt.ReadyTimeoutSecs}
	if rt.Limits != nil {
		out.Limits = shared.Limits{CPU: rt.Limits.CPU, Memory: rt.Limits.Memory}
	}
	return out
}

func (c *runnerConfig) artifacts() *shared.Artifacts {
	a := c.file.Artifacts
	if a == nil {
		return nil
	}
	return &shared.Artifacts{Path: a.Path, MaxBytes: a.MaxBytes, MaxFiles: a.MaxFiles, TimeoutSecs: a.TimeoutSecs}
}

// jobObjects is the file's remote, runtime and artifacts as a job file's
// objects, only the values it sets.
func (c *runnerConfig) jobObjects() (map[string]any, error) {
	obj := struct {
		Remote    *shared.Remote    `json:"remote,omitempty"`
		Runtime   *shared.Runtime   `json:"runtime,omitempty"`
		Artifacts *shared.Artifacts `json:"artifacts,omitempty"`
	}{Runtime: c.runtime(), Artifacts: c.artifacts()}
	if r := c.file.Remote; r != nil {
		obj.Remote = &shared.Remote{Host: r.Host, WorkDir: r.WorkDir}
		if in := r.Incus; in != nil {
			obj.Remote.Incus = shared.Incus{Project: in.Project, Endpoint: in.Endpoint,
				ClientCert: in.ClientCert, ClientKey: in.ClientKey, ServerCert: in.ServerCert}
		}
	}
	m, err := toMap(obj)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", c.path, err)
	}
	// A file with none of them prunes to nothing.
	pruned, _ := prune(m).(map[string]any)
	if pruned == nil {
		pruned = map[string]any{}
	}
	return pruned, nil
}

// toMap is v as a JSON object.
func toMap(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// prune drops zero values (unset: zero stands for the default) from a
// JSON value; a map left empty is dropped too (nil).
func prune(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		if isZero(v) {
			return nil
		}
		return v
	}
	for k, sv := range m {
		if p := prune(sv); p == nil {
			delete(m, k)
		} else {
			m[k] = p
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// isZero reports a JSON value that stands for "not set".
func isZero(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case bool:
		return !v
	case json.Number:
		f, err := v.Float64()
		return err == nil && f == 0
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// mergeJob lays the config's values under the job's: a value the job sets
// (not zero) wins, the config fills in the rest. The config's runtime goes
// only to a job with a command, its artifacts only to a whole job (a job
// file without a command stays a version 1 job).
func mergeJob(job shared.WholeJob, cfg *runnerConfig) (shared.WholeJob, error) {
	if cfg == nil || len(cfg.job) == 0 {
		return job, nil
	}
	m, err := toMap(job)
	if err != nil {
		return job, err
	}
	src := map[string]any{}
	for k, v := range cfg.job {
		src[k] = v
	}
	if job.Command == nil {
		delete(src, "runtime")
		delete(src, "artifacts")
	}
	fill(m, src)
	data, err := json.Marshal(m)
	if err != nil {
		return job, err
	}
	var out shared.WholeJob
	if err := strictjson.Decode(data, &out); err != nil {
		return job, fmt.Errorf("merge config %s: %w", cfg.path, err)
	}
	return out, nil
}

// fill sets in dst every value of src that dst does not set.
func fill(dst, src map[string]any) {
	for k, sv := range src {
		dv, ok := dst[k]
		dm, dIsMap := dv.(map[string]any)
		sm, sIsMap := sv.(map[string]any)
		switch {
		case dIsMap && sIsMap:
			fill(dm, sm)
		case !ok || isZero(dv):
			dst[k] = sv
		}
	}
}

// loadJob reads the job file --job names, with the config's values under
// it.
func (a *App) loadJob(path string, cfg *runnerConfig) (shared.WholeJob, error) {
	job, err := a.readJobRaw(path)
	if err != nil {
		return job, err
	}
	name := path
	if path == "-" {
		name = "<stdin>"
	}
	if job, err = mergeJob(job, cfg); err != nil {
		return job, err
	}
	return job, checkJobKind(job, name, cfg)
}

// applySSHConfig sets *flag from the config when the flag was not given.
func applySSHConfig(flag *string, cfg *runnerConfig) {
	if *flag == "" && cfg != nil && cfg.file.SSHConfig != "" {
		*flag = cfg.file.SSHConfig
	}
}
