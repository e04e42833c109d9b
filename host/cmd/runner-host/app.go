package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// Exit codes. A verb that ran and failed exits with the system-failure
// code (exitSystemFailure, 125, unless --system-failure-exit-code or
// SYSTEM_FAILURE_EXIT_CODE say otherwise; see exit.go); a whole job that
// ran passes its own exit code through.
const (
	exitOK    = 0
	exitUsage = 2 // the command line is wrong
)

// App is one invocation of runner-host: ParseFlags picks the verb and
// parses its flags, Run runs it.
type App struct {
	Stdin  io.Reader // --job - reads the job file from it
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (BUILD_FAILURE_EXIT_CODE,
	// SYSTEM_FAILURE_EXIT_CODE). Nil: os.Getenv.
	Getenv func(string) string

	run   func(ctx context.Context) error
	codes exitCodes
}

// Verb is one subcommand.
type Verb struct {
	// Summary is the one line `runner-host help` prints.
	Summary string
	// Parse parses the verb's arguments and returns what to run.
	Parse func(ctx context.Context, app *App, args []string) (func(ctx context.Context) error, error)
}

// verbs is the dispatch table. A verb that lives in its own file may add
// itself from an init function.
var verbs = map[string]Verb{
	"plugins": {Summary: "load every plugin and print NAME VERSION protocol=N sha256=HEX", Parse: parsePlugins},
	"run":     {Summary: "run a job through a plugin: the whole job (with runtime and command) or the version 1 phases; exits with the job's code", Parse: parseRun},
}

// usageError is a command line that cannot run; Main exits with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// ParseFlags picks the verb named by args[0] and parses the rest.
func (a *App) ParseFlags(ctx context.Context, args []string) error {
	if len(args) == 0 {
		a.usage()
		return usagef("no verb given")
	}
	name := args[0]
	a.codes = exitCodes{system: exitSystemFailure}
	if name == "--version" {
		name = "version"
	}
	if name == "help" || name == "-h" || name == "--help" {
		if name == "help" && len(args) > 1 {
			// help VERB: the verb's own usage and flags.
			v, ok := verbs[args[1]]
			if !ok {
				a.usage()
				return usagef("help: unknown verb %q", args[1])
			}
			if _, err := v.Parse(ctx, a, []string{"-h"}); err != nil && !errors.Is(err, flag.ErrHelp) {
				return err
			}
		} else {
			a.usage()
		}
		a.run = func(context.Context) error { return nil }
		return nil
	}
	v, ok := verbs[name]
	if !ok {
		a.usage()
		return usagef("unknown verb %q", name)
	}
	run, err := v.Parse(ctx, a, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.run = func(context.Context) error { return nil }
			return nil
		}
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{err}
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	a.run = run
	return nil
}

// Run runs the verb ParseFlags picked.
func (a *App) Run(ctx context.Context) error {
	if a.run == nil {
		return errors.New("ParseFlags was not called")
	}
	return a.run(ctx)
}

func (a *App) usage() {
	fmt.Fprintln(a.Stderr, "usage: runner-host VERB [flags]\n\nverbs:")
	for _, name := range slices.Sorted(maps.Keys(verbs)) {
		fmt.Fprintf(a.Stderr, "  %-10s %s\n", name, verbs[name].Summary)
	}
}

// Main parses args, runs the verb and returns the exit code, having
// printed any error.
func Main(ctx context.Context, app *App, args []string) int {
	if err := app.ParseFlags(ctx, args); err != nil {
		fmt.Fprintln(app.Stderr, "runner-host:", err)
		return exitUsage
	}
	if err := app.Run(ctx); err != nil {
		return exitStatus(app.Stderr, err, app.codes) // exit.go
	}
	return exitOK
}

// common are the flags every verb that loads plugins has.
type common struct {
	pluginDir    string
	logLevel     string
	logFormat    string
	pins         pinFlag
	startTimeout time.Duration
	systemCode   int
	codes        exitCodes
	// config is --config (config.go); set holds the flags given on the
	// command line, which win over the config file.
	config string
	set    map[string]bool
	fs     *flag.FlagSet
}

func (c *common) register(fs *flag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.pluginDir, "plugin-dir", "", "directory of the executor-* plugin binaries (default: the directory of runner-host)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "lowest level of log lines printed on stderr, the plugins' included (trace, debug, info, warn, error, off)")
	fs.StringVar(&c.logFormat, "log-format", "text", "format of the host's own log lines on stderr: text or json (one JSON object a line)")
	fs.Var(&c.pins, "require-sha256", "NAME=HEX: refuse plugin NAME unless its binary has this SHA-256 (repeatable)")
	fs.DurationVar(&c.startTimeout, "start-timeout", host.DefaultStartTimeout, "a plugin not ready (handshake, Describe, Configure) within this is killed with its process group")
	fs.IntVar(&c.systemCode, "system-failure-exit-code", -1, "exit code when the executor or the infrastructure fails, not the job (default $SYSTEM_FAILURE_EXIT_CODE, else 125)")
}

// registerConfig adds --config, for the verbs that read the config file.
func (c *common) registerConfig(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "TOML file of defaults for every job: plugin dir and pins, ssh config, remote, runtime, artifacts, log level and format (default $"+envConfig+"); the job file's values win over it, flags over both")
}

// resolve fills in defaults once the flags are parsed, and sets app's exit
// codes.
func (c *common) resolve(app *App) error {
	c.set = map[string]bool{}
	if c.fs != nil {
		c.fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	}
	codes, err := resolveExitCodes(c.systemCode, app.getenv)
	if err != nil {
		return err
	}
	c.codes, app.codes = codes, codes
	if c.pluginDir == "" {
		dir, err := executableDir()
		if err != nil {
			return fmt.Errorf("default --plugin-dir: %w", err)
		}
		c.pluginDir = dir
	}
	if c.startTimeout < 0 {
		return usagef("--start-timeout %v: want a positive duration", c.startTimeout)
	}
	if c.logFormat == "" {
		c.logFormat = "text"
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return usagef("--log-format %q: want text or json", c.logFormat)
	}
	if hclog.LevelFromString(c.logLevel) == hclog.NoLevel {
		return usagef("--log-level %q: want trace, debug, info, warn, error or off", c.logLevel)
	}
	return nil
}

// open is how every verb opens a plugin: host.Dispense of name in
// --plugin-dir (one file name, an executable executor-NAME there), pinned
// by --require-sha256, bounded by --start-timeout, logging at --log-level.
func (c *common) open(ctx context.Context, stderr io.Writer, name string, settings shared.Settings) (*host.Plugin, error) {
	return host.Dispense(ctx, name, host.Options{
		PluginDir:     c.pluginDir,
		RequireSHA256: c.pins,
		StartTimeout:  c.startTimeout,
		Settings:      settings,
		Logger:        c.logger(stderr),
	})
}

func (c *common) logger(stderr io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "runner-host",
		Level:      hclog.LevelFromString(c.logLevel),
		Output:     stderr,
		JSONFormat: c.logFormat == "json",
	})
}

// executableDir is the directory of the running binary, symlinks resolved:
// where `make build` puts the plugins next to it.
func executableDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(exe); err == nil {
		exe = resolved
	}
	return filepath.Dir(exe), nil
}

// pinFlag collects --require-sha256 NAME=HEX.
type pinFlag map[string]string

func (p *pinFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(*p)) {
		parts = append(parts, k+"="+(*p)[k])
	}
	return strings.Join(parts, ",")
}

func (p *pinFlag) Set(v string) error {
	name, sum, ok := strings.Cut(v, "=")
	if !ok || name == "" || sum == "" {
		return fmt.Errorf("%q is not NAME=HEX", v)
	}
	if err := host.CheckName(name); err != nil {
		return err
	}
	if *p == nil {
		*p = map[string]string{}
	}
	if old, dup := (*p)[name]; dup && old != sum {
		return fmt.Errorf("plugin %s pinned twice, to %s and %s", name, old, sum)
	}
	(*p)[name] = strings.ToLower(sum)
	return nil
}

// newFlagSet returns a flag set that reports to app.Stderr and returns
// its errors instead of exiting.
func newFlagSet(app *App, verb, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(app.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(app.Stderr, "usage: runner-host %s %s\n\nflags:\n", verb, args)
		fs.PrintDefaults()
	}
	return fs
}

// noArgs refuses positional arguments after the flags.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
