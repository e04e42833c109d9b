// Package testharness checks an executor plugin, ours or anyone's, against
// conformance cases from the outside: it starts the plugin binary through
// go-plugin, gives it a virtual remote host per case (a real SSH server over
// a private filesystem, with a faithful fake of the Incus API behind the
// remote's Unix socket), and compares what the plugin did with the case's
// golden mkdir command and device map.
//
// Run and RunCases start a plugin binary; RunExecutor serves a Go
// shared.Executor in process over go-plugin's in-memory gRPC connection,
// through the same adapters and status mapping. Each runs the version 1
// cases, then the whole-job cases (contract version 2, whole.go): the whole
// job against the virtual remote, its fake Incus API and the fake's virtual
// guests, checked against the case's wants; a plugin that speaks only
// protocol 1 gets each whole-job case reported as skipped
// (SkipProtocol1).
//
// A plugin learns where the remote is only through the protocol: Configure
// receives shared.Settings{SSHConfigPath}, an OpenSSH client config naming
// the case's remote.host with HostName, Port, User, IdentityFile and
// UserKnownHostsFile. The plugin must verify the host key against that
// known_hosts file, authenticate with that key, run its commands in exec
// sessions, and reach Incus by OpenSSH streamlocal forwarding to
// /var/lib/incus/unix.socket.
package testharness

import (
	"context"
	"embed"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness/cases"
)

//go:embed testdata/cases/public/*.txtar testdata/cases/ours/*.txtar testdata/whole/ours/*.txtar
var builtin embed.FS

// Config says which plugin to check against which cases.
type Config struct {
	// Plugin is the plugin binary.
	Plugin string
	// Cases is a folder of *.txtar cases (version 1 and whole-job cases
	// alike). Empty: the project's own cases, built into this package.
	// "-": no version 1 cases.
	Cases string
	// WholeCases is a folder of whole-job (contract version 2) *.txtar
	// cases. Empty: those in Cases, or without Cases the project's own,
	// built in. "-": none.
	WholeCases string
	// Run, when set, selects the cases whose name it matches.
	Run *regexp.Regexp
	// Update rewrites each case's want/ files from what the plugin did
	// (inputs are never touched). It needs Cases.
	Update bool
	// Logger receives the plugin's log lines. Nil: Run sends them to the
	// test's log (TestLogger); RunCases discards them.
	Logger hclog.Logger
	// InsecureNoMTLS starts the plugin without mutual TLS, for bring-up
	// only (BringUpWarning): such a run is never a conformance pass.
	InsecureNoMTLS bool
}

// Result is one case's outcome.
type Result struct {
	Name     string   `json:"name"`
	Passed   bool     `json:"passed"`
	Skipped  string   `json:"skipped,omitempty"` // why, when skipped
	Failures []string `json:"failures,omitempty"`
	Updated  bool     `json:"updated,omitempty"`
}

// Summary is the whole outcome of a run, as `conformance --json` prints it.
type Summary struct {
	Results []Result `json:"results"`
	Passed  int      `json:"passed"`
	Failed  int      `json:"failed"`
	Skipped int      `json:"skipped"`
}

// Summarize counts results.
func Summarize(results []Result) Summary {
	s := Summary{Results: results}
	for _, r := range results {
		switch {
		case r.Skipped != "":
			s.Skipped++
		case r.Passed:
			s.Passed++
		default:
			s.Failed++
		}
	}
	return s
}

// LoadCases reads the configured cases, filtered by cfg.Run.
func LoadCases(cfg Config) ([]*cases.Case, error) {
	var cs []*cases.Case
	var err error
	if cfg.Cases == "-" {
		return nil, nil
	}
	if cfg.Cases == "" {
		if cfg.Update {
			return nil, fmt.Errorf("--update needs a cases folder: the built-in cases are read-only")
		}
		cs, err = cases.LoadFS(builtin, "testdata/cases")
	} else {
		cs, err = cases.LoadDir(cfg.Cases)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Run == nil {
		return cs, nil
	}
	var out []*cases.Case
	for _, c := range cs {
		if cfg.Run.MatchString(c.Name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// LoadWholeCases reads the configured whole-job cases, filtered by cfg.Run.
func LoadWholeCases(cfg Config) ([]*cases.WholeCase, error) {
	var cs []*cases.WholeCase
	var err error
	dir := cfg.WholeCases
	if dir == "" && cfg.Cases != "-" {
		dir = cfg.Cases
	}
	switch dir {
	case "-":
		return nil, nil
	case "":
		cs, err = cases.LoadWholeFS(builtin, "testdata/whole")
	default:
		cs, err = cases.LoadWholeFS(os.DirFS(dir), ".")
		if err != nil {
			err = fmt.Errorf("whole-job cases in %s: %w", dir, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if cfg.Run == nil {
		return cs, nil
	}
	var out []*cases.WholeCase
	for _, c := range cs {
		if cfg.Run.MatchString(c.Name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// RunCases runs every configured case against the plugin, the version 1
// cases first, then the whole-job cases, and returns one result per case.
// The error is for failures of the harness itself (no cases, a plugin that
// will not start).
func RunCases(ctx context.Context, cfg Config, each func(Result)) ([]Result, error) {
	cs, err := LoadCases(cfg)
	if err != nil {
		return nil, err
	}
	ws, err := LoadWholeCases(cfg)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 && len(ws) == 0 {
		return nil, fmt.Errorf("no case matches --run %v", cfg.Run)
	}
	p, err := startPlugin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	results := make([]Result, 0, len(cs))
	for _, c := range cs {
		r := runCase(ctx, p, c, cfg.Update)
		results = append(results, r)
		if each != nil {
			each(r)
		}
	}
	for _, c := range ws {
		r := runWholeCase(ctx, p, c)
		results = append(results, r)
		if each != nil {
			each(r)
		}
	}
	return results, nil
}

// Run runs every configured case as a subtest of t.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	cs, err := LoadCases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := LoadWholeCases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = TestLogger(t)
	}
	ctx := t.Context()
	p, err := startPlugin(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	runAll(t, p, cs, ws, cfg.Update)
}

// TestLogger returns a logger that writes each line to t's log (t.Log, so
// `go test` shows it for a failed test or with -v), at debug level and up:
// what Run gives a plugin when cfg.Logger is nil. Lines that arrive once t
// has ended (a plugin's last words after its Close) are dropped.
func TestLogger(t testing.TB) hclog.Logger {
	w := &testLogWriter{t: t}
	// Registered before the plugin's Close: cleanups run last first, so
	// this one runs after the plugin is closed.
	t.Cleanup(w.end)
	return hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Debug, Output: w})
}

// testLogWriter writes to a test's log until the test ends.
type testLogWriter struct {
	mu    sync.Mutex
	t     testing.TB
	ended bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
}

// runAll runs v1 and whole-job cases as subtests of t.
func runAll(t *testing.T, p shared.Executor, cs []*cases.Case, ws []*cases.WholeCase, update bool) {
	ctx := t.Context()
	report := func(t *testing.T, r Result) {
		if r.Skipped != "" {
			t.Skip(r.Skipped)
		}
		for _, f := range r.Failures {
			t.Error(f)
		}
	}
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) { report(t, runCase(ctx, p, c, update)) })
	}
	for _, c := range ws {
		t.Run(WholePrefix+c.Name, func(t *testing.T) { report(t, runWholeCase(ctx, p, c)) })
	}
}

// check collects the failures of one case.
type check struct {
	failures []string
}

func (c *check) failf(format string, args ...any) {
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

func runCase(ctx context.Context, p shared.Executor, c *cases.Case, update bool) (res Result) {
	res.Name = c.Name
	if shared.IsLocalHost(c.Spec.Remote.Host) {
		res.Skipped = "remote.host " + c.Spec.Remote.Host + " runs on this machine, not on a virtual remote"
		return res
	}
	dir, err := os.MkdirTemp("", "conformance-*")
	if err != nil {
		res.Failures = []string{err.Error()}
		return res
	}
	defer os.RemoveAll(dir)
	remote, err := StartRemote(ctx, c, dir)
	if err != nil {
		res.Failures = []string{"harness: " + err.Error()}
		return res
	}
	defer remote.Close()

	ck := &check{}
	out := caseRun(ctx, ck, p, c, remote)
	res.Failures = ck.failures
	res.Passed = len(ck.failures) == 0
	if !update || out == nil || res.Passed {
		return res
	}
	// --update: rewrite the goldens from what the plugin did, then run the
	// case again from the rewritten file on a fresh remote, so a fault the
	// goldens cannot express (an extra command, a dry run that writes, a
	// partial apply) still fails.
	if err := c.Update(*out); err != nil {
		res.Failures = append(res.Failures, "update: "+err.Error())
		return res
	}
	updated, err := cases.Load(c.File)
	if err != nil {
		res.Failures = append(res.Failures, "update: "+err.Error())
		return res
	}
	again := runCase(ctx, p, updated, false)
	again.Updated = true
	return again
}

// caseRun does what FORMAT.md says a harness checks, in order, and returns
// what the plugin did (for --update), or nil when the harness could not tell.
func caseRun(ctx context.Context, ck *check, p shared.Executor, c *cases.Case, remote *Remote) *cases.Outcome {
	t := &timing{}
	defer func() { checkSafety(ck, c.Safety, remote, t, boundedV1Call(c)) }()
	if err := t.call(ctx, c.Safety, "Configure", func(ctx context.Context) error {
		return p.Configure(ctx, shared.Settings{SSHConfigPath: remote.SSHConfig})
	}); err != nil {
		ck.failf("Configure with the virtual remote's SSH config: %v", err)
		return nil
	}
	start, err := remote.State()
	if err != nil {
		ck.failf("harness: %v", err)
		return nil
	}
	wantPrepareOK := c.WantMkdir != nil

	// 1. Dry run: the plan, and nothing changed. A safety case's fault
	// is about the real run alone.
	if c.Safety == nil {
		remote.SSH.ResetCommands()
		prep, err := p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: c.Spec, DryRun: true})
		checkPrepare(ck, "dry run", c, prep, err)
		if wantPrepareOK && err == nil {
			dev, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: c.Spec, DryRun: true})
			checkDevices(ck, "dry run", "reported", c, dev.Devices, err)
		}
		checkUnchanged(ck, "dry run", remote, start)
	}

	// 2. Real run.
	remote.SSH.ResetCommands()
	var prep shared.PrepareResult
	prepErr := t.call(ctx, c.Safety, cases.CallPrepareDirectories, func(ctx context.Context) error {
		var err error
		prep, err = p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: c.Spec})
		return err
	})
	cmds := remote.SSH.Commands()
	checkPrepare(ck, "real run", c, prep, prepErr)
	out := &cases.Outcome{Mkdir: prep.Command}
	if prepErr != nil {
		out.PrepareError = prepErr.Error()
	}
	if !wantPrepareOK {
		if len(cmds) > 0 {
			ck.failf("real run: PrepareDirectories failed as wanted but ran %d command(s) on the remote:\n%s", len(cmds), numbered(cmds))
		}
		checkUnchanged(ck, "real run (failed PrepareDirectories)", remote, start)
		return out
	}
	switch {
	case len(cmds) != 1:
		ck.failf("real run: PrepareDirectories ran %d commands on the remote, want exactly 1:\n%s", len(cmds), numbered(cmds))
	case cmds[0] != *c.WantMkdir:
		ck.failf("real run: the command run on the remote differs from want/mkdir (-want +got):\n%s", cmp.Diff(*c.WantMkdir, cmds[0]))
	}
	if prepErr == nil {
		dirs, err := mkdirDirs(*c.WantMkdir)
		if err != nil {
			ck.failf("harness: want/mkdir: %v", err)
		}
		for _, d := range dirs {
			if !remote.FS.IsDir(d) {
				ck.failf("real run: directory %s is not on the remote after PrepareDirectories", d)
			}
		}
	}

	before, err := remote.State()
	if err != nil {
		ck.failf("harness: %v", err)
		return nil
	}
	var dev shared.DevicesResult
	devErr := t.call(ctx, c.Safety, callConfigureDevices, func(ctx context.Context) error {
		var err error
		dev, err = p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: c.Spec})
		return err
	})
	checkDevices(ck, "real run", "the instance's", c, remote.Devices(), devErr)
	if devErr != nil {
		out.DevicesError = devErr.Error()
		checkUnchanged(ck, "real run (failed ConfigureDevices)", remote, before)
		return out
	}
	out.Devices = remote.Devices()
	if c.WantDevices != nil {
		if d := cmp.Diff(c.WantDevices, dev.Devices); d != "" {
			ck.failf("real run: ConfigureDevices reported a device map unlike want/devices.json (-want +reported):\n%s", d)
		}
	}
	after, err := remote.State()
	if err != nil {
		ck.failf("harness: %v", err)
		return nil
	}
	// ConfigureDevices reads the remote host; it must not write to it.
	if d := cmp.Diff(before.Files, after.Files); d != "" {
		ck.failf("real run: ConfigureDevices changed the remote filesystem (-before +after):\n%s", d)
	}

	// 3. A second real run succeeds and changes nothing.
	if _, err := p.ConfigureDevices(ctx, shared.DevicesRequest{Spec: c.Spec}); err != nil {
		ck.failf("second real run: ConfigureDevices failed: %v", err)
	}
	checkUnchanged(ck, "second real run", remote, after)
	return out
}

const callConfigureDevices = "ConfigureDevices"

// boundedV1Call is the call a version 1 safety case's bound_secs is about:
// PrepareDirectories when it must fail, else ConfigureDevices.
func boundedV1Call(c *cases.Case) string {
	if c.WantMkdir == nil {
		return cases.CallPrepareDirectories
	}
	return callConfigureDevices
}

func checkPrepare(ck *check, phase string, c *cases.Case, res shared.PrepareResult, err error) {
	if c.WantMkdir == nil {
		if err == nil {
			ck.failf("%s: PrepareDirectories succeeded with %q; want an error containing %q", phase, res.Command, c.WantPrepareError)
			return
		}
		checkLines(ck, phase+": PrepareDirectories", err, c.WantPrepareError)
		return
	}
	if err != nil {
		ck.failf("%s: PrepareDirectories failed: %v", phase, err)
		return
	}
	if res.Command != *c.WantMkdir {
		ck.failf("%s: PrepareDirectories reported a command unlike want/mkdir (-want +got):\n%s", phase, cmp.Diff(*c.WantMkdir, res.Command))
	}
}

// checkDevices compares a device map (whose: "reported" or "the instance's")
// with want/devices.json, or an error with want/devices-error.
func checkDevices(ck *check, phase, whose string, c *cases.Case, got shared.Devices, err error) {
	if c.WantDevices == nil {
		if err == nil {
			ck.failf("%s: ConfigureDevices succeeded; want an error containing %q", phase, c.WantDevicesError)
			return
		}
		checkLines(ck, phase+": ConfigureDevices", err, c.WantDevicesError)
		return
	}
	if err != nil {
		ck.failf("%s: ConfigureDevices failed: %v", phase, err)
		return
	}
	if d := cmp.Diff(c.WantDevices, got); d != "" {
		ck.failf("%s: %s device map differs from want/devices.json (-want +got):\n%s", phase, whose, d)
	}
}

func checkLines(ck *check, what string, err error, lines []string) {
	for _, l := range lines {
		if !strings.Contains(err.Error(), l) {
			ck.failf("%s: error %q does not contain %q", what, err.Error(), l)
		}
	}
}

func checkUnchanged(ck *check, phase string, remote *Remote, before State) {
	now, err := remote.State()
	if err != nil {
		ck.failf("harness: %v", err)
		return
	}
	if d := cmp.Diff(before.Files, now.Files); d != "" {
		ck.failf("%s changed the remote filesystem (-before +after):\n%s", phase, d)
	}
	if d := cmp.Diff(before.Devices, now.Devices); d != "" {
		ck.failf("%s changed the instance's devices (-before +after):\n%s", phase, d)
	}
}

// mkdirDirs returns the directories a `set -euo pipefail; mkdir -p …`
// command names, as a shell parses them.
func mkdirDirs(command string) ([]string, error) {
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(command), "want/mkdir")
	if err != nil {
		return nil, err
	}
	for _, st := range f.Stmts {
		call, ok := st.Cmd.(*syntax.CallExpr)
		if !ok || len(call.Args) < 2 {
			continue
		}
		words := make([]string, len(call.Args))
		for i, w := range call.Args {
			if words[i], err = expand.Literal(&expand.Config{}, w); err != nil {
				return nil, err
			}
		}
		if words[0] == "mkdir" && words[1] == "-p" {
			return words[2:], nil
		}
	}
	return nil, fmt.Errorf("no mkdir -p in %q", command)
}

func numbered(cmds []string) string {
	var b strings.Builder
	for i, c := range cmds {
		fmt.Fprintf(&b, "  %d: %s\n", i+1, c)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
