package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/shared"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }

// testPlugin is host/testdata/testplugin, built once per test process; its
// name comes from the file name it is installed under.
func testPlugin(tb testing.TB) string {
	tb.Helper()
	return testbin.BuildOnce(tb, "testplugin", testbin.TestPlugin, "")
}

// pluginDir returns a directory with the test plugin installed under each
// name.
func pluginDir(tb testing.TB, names ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, name := range names {
		if err := os.Link(testPlugin(tb), filepath.Join(dir, "executor-"+name)); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func sha256File(tb testing.TB, path string) string {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// runMain runs runner-host with args and returns its exit code and output.
func runMain(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	return runMainEnv(tb, nil, args...)
}

// runMainEnv is runMain with env as the whole environment runner-host
// reads.
func runMainEnv(tb testing.TB, env map[string]string, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code = Main(tb.Context(), &App{Stdout: &out, Stderr: &errOut, Getenv: getenv}, args)
	tb.Logf("runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func TestPlugins(t *testing.T) {
	sum := sha256File(t, testPlugin(t))
	zero := strings.Repeat("0", 64)
	tests := []struct {
		name       string
		plugins    []string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr []string
	}{
		{
			name: "lists every plugin", plugins: []string{"beta", "alpha"},
			wantStdout: fmt.Sprintf("alpha 0.0.1-test protocol=1 sha256=%s\nbeta 0.0.1-test protocol=1 sha256=%s\n", sum, sum),
		},
		{
			name: "pinned and matching", plugins: []string{"alpha"}, args: []string{"--require-sha256", "alpha=" + strings.ToUpper(sum)},
			wantStdout: fmt.Sprintf("alpha 0.0.1-test protocol=1 sha256=%s\n", sum),
		},
		{
			name: "digest differs", plugins: []string{"alpha", "beta"}, args: []string{"--require-sha256", "alpha=" + zero},
			wantCode: exitSystemFailure, wantStdout: fmt.Sprintf("beta 0.0.1-test protocol=1 sha256=%s\n", sum),
			wantStderr: []string{"plugin alpha refused", sum, zero, "1 of 2 plugins failed to load"},
		},
		{
			name: "pinned plugin missing", plugins: []string{"alpha"}, args: []string{"--require-sha256", "gamma=" + sum},
			wantCode: exitSystemFailure, wantStdout: fmt.Sprintf("alpha 0.0.1-test protocol=1 sha256=%s\n", sum),
			wantStderr: []string{"plugin gamma is pinned", "1 of 2 plugins failed to load"},
		},
		{
			name: "incompatible protocol", plugins: []string{"alpha-v3only"},
			wantCode: exitSystemFailure, wantStderr: []string{"host protocol versions [1 2]", "Plugin version: 3"},
		},
		{
			name: "no plugins", wantCode: exitSystemFailure, wantStderr: []string{"no executor-* plugins"},
		},
		{
			name: "malformed pin", plugins: []string{"alpha"}, args: []string{"--require-sha256", "alpha"},
			wantCode: exitUsage, wantStderr: []string{`"alpha" is not NAME=HEX`},
		},
		{
			name: "stray argument", plugins: []string{"alpha"}, args: []string{"extra"},
			wantCode: exitUsage, wantStderr: []string{`unexpected argument "extra"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, tt.plugins...)
			code, stdout, stderr := runMain(t, append([]string{"plugins", "--plugin-dir", dir}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if diff := cmp.Diff(tt.wantStdout, stdout); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not contain %q", s)
				}
			}
		})
	}
}

// writeJob writes a job file holding spec, with extra merged into its
// top-level object, and returns its path.
func writeJob(tb testing.TB, spec shared.JobSpec, extra map[string]any) string {
	tb.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		tb.Fatal(err)
	}
	if extra != nil {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			tb.Fatal(err)
		}
		for k, v := range extra {
			m[k] = v
		}
		if data, err = json.Marshal(m); err != nil {
			tb.Fatal(err)
		}
	}
	path := filepath.Join(tb.TempDir(), "job.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

func testSpec(id string) shared.JobSpec {
	return shared.JobSpec{
		Job:    shared.Job{ID: id},
		Host:   shared.HostPaths{JobDir: "/tmp/run/jobs/job"},
		Remote: shared.Remote{Host: "pika-build", WorkDir: "/var/tmp/pikaci", Incus: shared.Incus{Project: "p"}},
	}
}

func TestRunText(t *testing.T) {
	dir := pluginDir(t, "remote-linux-vm")
	job := writeJob(t, testSpec("job"), nil)
	code, stdout, _ := runMain(t, "run", "--plugin-dir", dir, "--job", job, "--dry-run")
	if code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, s := range []string{
		"plugin remote-linux-vm 0.0.1-test protocol=1\n",
		"prepare-directories (dry run): ",
		"  command: mkdir -p /tmp/run/jobs/job\n",
		"configure-devices (dry run): ",
		"  instance: pikaci-test (project p), unchanged\n",
		"  device snapshot: path=/workspace/snapshot source=/var/tmp/pikaci type=disk\n",
		"  warning: test plugin: nothing was applied\n",
	} {
		if !strings.Contains(stdout, s) {
			t.Errorf("stdout does not contain %q", s)
		}
	}
}

func TestRunJSON(t *testing.T) {
	type phaseWant struct {
		Phase     string
		Command   string
		Devices   shared.Devices
		Warnings  []string
		Check     bool
		DryRun    bool
		Error     string // a substring
		ErrorKind string
	}
	devices := shared.Devices{"snapshot": {"type": "disk", "path": "/workspace/snapshot", "source": "/var/tmp/pikaci"}}
	warnings := []string{"test plugin: nothing was applied"}
	tests := []struct {
		name     string
		spec     shared.JobSpec
		args     []string
		wantCode int
		want     []phaseWant
	}{
		{
			name: "every phase",
			spec: testSpec("job"),
			want: []phaseWant{
				{Phase: "prepare_directories", Command: "mkdir -p /tmp/run/jobs/job"},
				{Phase: "configure_devices", Devices: devices, Warnings: warnings},
			},
		},
		{
			name: "settings reach the plugin",
			spec: testSpec("settings"),
			args: []string{"--ssh-config", "/etc/runner/ssh_config", "--phases", "prepare-directories"},
			want: []phaseWant{{Phase: "prepare_directories", Command: "/etc/runner/ssh_config"}},
		},
		{
			name: "one phase",
			spec: testSpec("job"),
			args: []string{"--phases", "configure-devices"},
			want: []phaseWant{{Phase: "configure_devices", Devices: devices, Warnings: warnings}},
		},
		{
			name: "first phase fails",
			spec: testSpec("not-found"), wantCode: exitSystemFailure,
			want: []phaseWant{{Phase: "prepare_directories", Error: `job "not-found" not found`, ErrorKind: "not found"}},
		},
		{
			name:     "second phase fails",
			spec:     func() shared.JobSpec { s := testSpec("job"); s.Job.WritableWorkspace = true; return s }(),
			wantCode: exitSystemFailure,
			// Refused by the host's check before any phase ran.
			want: []phaseWant{
				{Phase: "configure_devices", Check: true, Error: "writable workspace", ErrorKind: "invalid input"},
			},
		},
		{
			name:     "second phase refused by the plugin's dry run",
			spec:     testSpec("devices-refused"),
			wantCode: exitSystemFailure,
			want: []phaseWant{
				{Phase: "configure_devices", Check: true, DryRun: true, Error: "refused by the test plugin's ConfigureDevices (dry run true)", ErrorKind: "invalid input"},
			},
		},
		{
			name:     "bad endpoint refused before any phase ran",
			spec:     func() shared.JobSpec { s := testSpec("job"); s.Remote.Incus.Endpoint = "http://incus:8443"; return s }(),
			wantCode: exitSystemFailure,
			want: []phaseWant{
				{Phase: "configure_devices", Check: true, Error: `remote.incus.endpoint "http://incus:8443"`, ErrorKind: "invalid input"},
			},
		},
		{
			name: "a dry run is not checked first",
			spec: testSpec("devices-refused"), args: []string{"--dry-run"}, wantCode: exitSystemFailure,
			want: []phaseWant{
				{Phase: "prepare_directories", DryRun: true, Command: "mkdir -p /tmp/run/jobs/job"},
				{Phase: "configure_devices", DryRun: true, Error: "refused by the test plugin's ConfigureDevices (dry run true)", ErrorKind: "invalid input"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, "remote-linux-vm")
			job := writeJob(t, tt.spec, nil)
			code, stdout, _ := runMain(t, append([]string{"run", "--plugin-dir", dir, "--job", job, "--json"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			var rep report
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&rep); err != nil {
				t.Fatalf("stdout is not a report: %v", err)
			}
			wantInfo := shared.Info{Name: "remote-linux-vm", Version: "0.0.1-test", Protocol: 1, Capabilities: []string{"test"}}
			if diff := cmp.Diff(wantInfo, rep.Plugin); diff != "" {
				t.Errorf("plugin (-want +got):\n%s", diff)
			}
			var got []phaseWant
			for _, p := range rep.Phases {
				if p.StartedAt.IsZero() || p.FinishedAt.Before(p.StartedAt) {
					t.Errorf("phase %s: started %v, finished %v", p.Phase, p.StartedAt, p.FinishedAt)
				}
				// duration_ms comes from the monotonic clock, the times from
				// the wall clock; they need not agree to the microsecond.
				if p.DurationMS < 0 {
					t.Errorf("phase %s: duration_ms %v", p.Phase, p.DurationMS)
				}
				g := phaseWant{Phase: p.Phase, Command: p.Command, Devices: p.Devices, Warnings: p.Warnings,
					Check: p.Check, DryRun: p.DryRun, ErrorKind: p.ErrorKind}
				if p.Error != "" {
					g.Error = p.Error
				}
				got = append(got, g)
			}
			// Errors are compared as substrings.
			for i := range got {
				if i < len(tt.want) && tt.want[i].Error != "" && strings.Contains(got[i].Error, tt.want[i].Error) {
					got[i].Error = tt.want[i].Error
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunRefuses(t *testing.T) {
	dir := pluginDir(t, "remote-linux-vm")
	good := writeJob(t, testSpec("job"), nil)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "no job", args: []string{"run", "--plugin-dir", dir}, wantCode: exitUsage, wantStderr: "--job is required"},
		{
			name: "unknown phase", args: []string{"run", "--plugin-dir", dir, "--job", good, "--phases", "prepare-directories,boot"},
			wantCode: exitUsage, wantStderr: `unknown phase "boot"`,
		},
		{
			name: "phase twice", args: []string{"run", "--plugin-dir", dir, "--job", good, "--phases", "configure-devices,configure_devices"},
			wantCode: exitUsage, wantStderr: "configure-devices given twice",
		},
		{
			name:     "unknown field in the job file",
			args:     []string{"run", "--plugin-dir", dir, "--job", writeJob(t, testSpec("job"), map[string]any{"remote_dirs": []string{}})},
			wantCode: exitSystemFailure, wantStderr: `unknown field "remote_dirs"`,
		},
		{
			name: "missing plugin", args: []string{"run", "--plugin-dir", dir, "--job", good, "--plugin", "nope"},
			wantCode: exitSystemFailure, wantStderr: "executor-nope",
		},
		{name: "unknown verb", args: []string{"fly"}, wantCode: exitUsage, wantStderr: `unknown verb "fly"`},
		{name: "bad log level", args: []string{"run", "--job", good, "--log-level", "loud"}, wantCode: exitUsage, wantStderr: `--log-level "loud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runMain(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr does not contain %q", tt.wantStderr)
			}
		})
	}
}

func TestDefaultPluginDirIsTheExecutablesDir(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	c := common{logLevel: "warn", systemCode: -1}
	if err := c.resolve(&App{}); err != nil {
		t.Fatal(err)
	}
	if c.pluginDir != filepath.Dir(exe) {
		t.Errorf("default plugin dir %s, want %s", c.pluginDir, filepath.Dir(exe))
	}
}

func TestVersionHelpVerbAndJobFromStdin(t *testing.T) {
	dir := pluginDir(t, "alpha")
	for _, args := range [][]string{{"version", "--plugin-dir", dir}, {"--version", "--plugin-dir", dir}} {
		code, stdout, _ := runMain(t, args...)
		if code != exitOK || !strings.HasPrefix(stdout, "runner-host ") || !strings.Contains(stdout, runtime.Version()) ||
			!strings.Contains(stdout, "alpha 0.0.1-test protocol=1") {
			t.Errorf("%v: exit %d, stdout %q: want the host's and Go's version, then each plugin's", args, code, stdout)
		}
	}
	code, _, stderr := runMain(t, "help", "check")
	if code != exitOK || !strings.Contains(stderr, "usage: runner-host check --job FILE") || !strings.Contains(stderr, "-system-failure-exit-code") {
		t.Errorf("help check: exit %d, stderr %q: want check's usage and flags", code, stderr)
	}
	if code, _, stderr := runMain(t, "help", "nope"); code != exitUsage || !strings.Contains(stderr, `unknown verb "nope"`) {
		t.Errorf("help nope: exit %d, stderr %q", code, stderr)
	}

	whole := pluginDir(t, "whole")
	job, _ := wholeJobFile(t, "j", []string{"exit", "3"}, nil)
	data, err := os.ReadFile(job)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	app := &App{Stdin: bytes.NewReader(data), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	if code := Main(t.Context(), app, []string{"run", "--plugin-dir", whole, "--plugin", "whole", "--job", "-"}); code != 3 || out.String() != "to stdout\n" {
		t.Errorf("--job -: exit %d, stdout %q, stderr %q; want the job run from stdin", code, out.String(), errOut.String())
	}
	app = &App{Stdin: strings.NewReader(`{"job": {"idd": "x"}}`), Stdout: &out, Stderr: &errOut}
	errOut.Reset()
	if code := Main(t.Context(), app, []string{"run", "--plugin-dir", whole, "--job", "-"}); code != exitSystemFailure || !strings.Contains(errOut.String(), "<stdin>") {
		t.Errorf("--job - with a bad file: exit %d, stderr %q; want an error naming <stdin>", code, errOut.String())
	}
}

// With --log-format json every line the host logs on stderr is one JSON
// object with hclog's keys; with text (the default) none is.
func TestLogFormatJSONMakesEveryLogLineAJSONObject(t *testing.T) {
	dir := pluginDir(t, "alpha")
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			code, _, stderr := runMain(t, "plugins", "--plugin-dir", dir, "--log-level", "debug", "--log-format", format)
			if code != 0 {
				t.Fatalf("exit code %d, want 0", code)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) < 2 {
				t.Fatalf("%d log lines at debug level, want some: %q", len(lines), stderr)
			}
			for _, line := range lines {
				var obj map[string]any
				err := json.Unmarshal([]byte(line), &obj)
				switch {
				case format == "json" && err != nil:
					t.Errorf("line %q is not one JSON object: %v", line, err)
				case format == "json" && (obj["@level"] == nil || obj["@message"] == nil || obj["@module"] == nil):
					t.Errorf("line %q lacks @level, @message or @module", line)
				case format == "text" && err == nil:
					t.Errorf("line %q is JSON under --log-format text", line)
				}
			}
		})
	}
}
