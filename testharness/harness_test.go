package testharness_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness"
)

// The binaries under test are built once per test process, on first use,
// into binDir (made by TestMain, removed after the tests).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "harness-test-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	pluginPkg = "github.com/pikaci/vmexec/plugin/cmd/executor-remote-linux-vm"
	brokenPkg = "github.com/pikaci/vmexec/plugin/internal/brokenplugin"
	cliPkg    = "github.com/pikaci/vmexec/testharness/cmd/conformance"
	// pluginFile is the file name every plugin binary here gets: the host
	// requires it to match the name the plugin describes itself with.
	pluginFile = "executor-remote-linux-vm"
)

// built is one binary, built at most once.
type built struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*built{}
)

// buildOnce builds pkg with ldflags to binDir/sub/file the first time any
// test asks for it, and returns its path.
func buildOnce(tb testing.TB, sub, file, pkg, ldflags string) string {
	tb.Helper()
	out := filepath.Join(binDir, sub, file)
	buildsMu.Lock()
	b, ok := builds[out]
	if !ok {
		b = &built{}
		builds[out] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		if b.err = testbin.Build(out, pkg, ldflags); b.err == nil {
			b.path = out
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// quotedCases are the built-in cases whose mkdir command holds a single
// quote inside a path: the ones a quoting slip shows up in.
func quotedCases(tb testing.TB) []string {
	tb.Helper()
	cs, err := testharness.LoadCases(testharness.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		if c.WantMkdir != nil && strings.Contains(*c.WantMkdir, `'"'"'`) {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		tb.Fatal("no built-in case has a quote in a path")
	}
	return names
}

// realPlugin is our plugin binary.
func realPlugin(tb testing.TB) string {
	tb.Helper()
	return buildOnce(tb, "real", pluginFile, pluginPkg, "")
}

// brokenPlugin is the real plugin with one fault injected; "" is the
// control, with none.
func brokenPlugin(tb testing.TB, fault string) string {
	tb.Helper()
	sub := "broken-" + fault
	if fault == "" {
		sub = "broken-control"
	}
	return buildOnce(tb, sub, pluginFile, brokenPkg, "-X main.fault="+fault)
}

// conformanceCLI is the conformance command.
func conformanceCLI(tb testing.TB) string {
	tb.Helper()
	return buildOnce(tb, "cli", "conformance", cliPkg, "")
}

// remoteCases are the names of the built-in cases (filtered by run) that
// run on a virtual remote; a case for this machine is skipped by the
// harness.
func remoteCases(tb testing.TB, run *regexp.Regexp) []string {
	tb.Helper()
	cs, err := testharness.LoadCases(testharness.Config{Run: run})
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		if !shared.IsLocalHost(c.Spec.Remote.Host) {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		tb.Fatalf("no built-in case matching %v runs on a virtual remote", run)
	}
	return names
}

// wholeCases are the result names of the built-in whole-job cases.
func wholeCases(tb testing.TB) []string {
	tb.Helper()
	cs, err := testharness.LoadWholeCases(testharness.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, testharness.WholePrefix+c.Name)
	}
	if len(names) < 20 {
		tb.Fatalf("%d built-in whole-job cases, want at least 20", len(names))
	}
	return names
}

func TestOurPluginPassesEveryCase(t *testing.T) {
	t.Parallel()
	bin := realPlugin(t)
	testharness.Run(t, testharness.Config{Plugin: bin})
}

// TestBrokenPluginsFail checks the harness against plugins with one known
// bug each: every bug fails at least one case, only the cases it should,
// and every failure message is one that points at that bug.
func TestBrokenPluginsFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault string
		// failCases, when set, are exactly the cases that must fail.
		failCases []string
		// wantAll must each occur in some failure.
		wantAll []string
		// every failure must contain one of these.
		allowed []string
	}{
		{
			fault: "", // the control: the wrapper alone breaks nothing
		},
		{
			fault:     "quoting",
			failCases: quotedCases(t),
			wantAll: []string{
				"dry run: PrepareDirectories reported a command unlike want/mkdir",
				"real run: the command run on the remote differs from want/mkdir",
				"is not on the remote after PrepareDirectories",
			},
			allowed: []string{"unlike want/mkdir", "differs from want/mkdir", "is not on the remote after PrepareDirectories"},
		},
		{
			fault: "missing-dir",
			wantAll: []string{
				"real run: the command run on the remote differs from want/mkdir",
				"directory /var/tmp/pikaci/cache/cargo-target is not on the remote after PrepareDirectories",
			},
			allowed: []string{"unlike want/mkdir", "differs from want/mkdir", "is not on the remote after PrepareDirectories"},
		},
		{
			fault:   "extra-command",
			wantAll: []string{"real run: PrepareDirectories ran 2 commands on the remote, want exactly 1", "1: test -d /"},
			allowed: []string{"PrepareDirectories ran 2 commands on the remote"},
		},
		{
			fault: "wrong-device-key",
			wantAll: []string{
				"dry run: reported device map differs from want/devices.json",
				"real run: the instance's device map differs from want/devices.json",
				`"required"`,
			},
			allowed: []string{"device map differs from want/devices.json", "ConfigureDevices reported a device map"},
		},
		{
			fault:   "partial-apply",
			wantAll: []string{"real run (failed ConfigureDevices) changed the instance's devices", "pk-snapsh-"},
			allowed: []string{"real run (failed ConfigureDevices) changed the instance's devices"},
		},
		{
			fault:   "dry-run-writes",
			wantAll: []string{"dry run changed the remote filesystem", "/var/tmp/pikaci/cache/cargo-home"},
			allowed: []string{"dry run changed the remote filesystem"},
		},
	}
	all := remoteCases(t, nil)
	for _, tt := range tests {
		name := tt.fault
		if name == "" {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := brokenPlugin(t, tt.fault)
			results, err := testharness.RunCases(t.Context(), testharness.Config{Plugin: bin, WholeCases: "-"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var ran, failed, failures []string
			for _, r := range results {
				if r.Skipped != "" {
					continue
				}
				ran = append(ran, r.Name)
				if r.Passed != (len(r.Failures) == 0) {
					t.Errorf("case %s: passed=%v with %d failures", r.Name, r.Passed, len(r.Failures))
				}
				if !r.Passed {
					failed = append(failed, r.Name)
				}
				for _, f := range r.Failures {
					failures = append(failures, r.Name+": "+f)
				}
			}
			if d := cmp.Diff(all, ran); d != "" {
				t.Errorf("cases run (-want +got):\n%s", d)
			}
			if tt.fault == "" {
				for _, f := range failures {
					t.Errorf("control failed: %s", f)
				}
				return
			}
			if len(failed) == 0 {
				t.Fatalf("fault %s passed every case", tt.fault)
			}
			if tt.failCases != nil {
				if d := cmp.Diff(tt.failCases, failed); d != "" {
					t.Errorf("failing cases (-want +got):\n%s", d)
				}
			}
			for _, want := range tt.wantAll {
				if !slices.ContainsFunc(failures, func(f string) bool { return strings.Contains(f, want) }) {
					t.Errorf("no failure mentions %q; failures:\n%s", want, strings.Join(failures, "\n"))
				}
			}
			for _, f := range failures {
				if !slices.ContainsFunc(tt.allowed, func(a string) bool { return strings.Contains(f, a) }) {
					t.Errorf("failure does not point at fault %s:\n%s", tt.fault, f)
				}
			}
		})
	}
}

// cliRun runs the conformance command and returns its output and exit code.
func cliRun(tb testing.TB, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	cmd := exec.CommandContext(tb.Context(), conformanceCLI(tb), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		tb.Fatalf("conformance %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestCLI runs the conformance command as plugin authors do. It runs the
// built binary: App lives in package main, which no test outside it can
// import.
func TestCLI(t *testing.T) {
	t.Parallel()
	all := remoteCases(t, nil)

	t.Run("real-plugin-passes", func(t *testing.T) {
		t.Parallel()
		out, stderr, code := cliRun(t, "--plugin", realPlugin(t))
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
		}
		var want []string
		for _, name := range all {
			want = append(want, "PASS "+name)
		}
		whole := wholeCases(t)
		for _, name := range whole {
			want = append(want, "PASS "+name)
		}
		want = append(want, fmt.Sprintf("%d passed, 0 failed, 0 skipped", len(all)+len(whole)))
		if d := cmp.Diff(want, strings.Split(strings.TrimSuffix(out, "\n"), "\n")); d != "" {
			t.Errorf("output (-want +got):\n%s", d)
		}
	})

	t.Run("broken-plugin-fails", func(t *testing.T) {
		t.Parallel()
		out, stderr, code := cliRun(t, "--plugin", brokenPlugin(t, "quoting"), "--whole-cases", "-")
		if code != 1 {
			t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
		}
		quoted := quotedCases(t)
		for _, name := range quoted {
			if !strings.Contains(out, "\nFAIL "+name+"\n    ") {
				t.Errorf("no indented FAIL block for %s in:\n%s", name, out)
			}
		}
		if got, want := lastLine(out), fmt.Sprintf("%d passed, %d failed, 0 skipped", len(all)-len(quoted), len(quoted)); got != want {
			t.Errorf("last line %q, want %q", got, want)
		}
	})

	t.Run("run-filters", func(t *testing.T) {
		t.Parallel()
		const re = "^manifest-"
		want := remoteCases(t, regexp.MustCompile(re))
		if len(want) >= len(all) {
			t.Fatalf("--run %s selects all %d cases: it would not show filtering", re, len(all))
		}
		out, stderr, code := cliRun(t, "--plugin", realPlugin(t), "--run", re)
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
		}
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if name, ok := strings.CutPrefix(l, "PASS "); ok {
				got = append(got, name)
			}
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("cases run (-want +got):\n%s", d)
		}
		if got, want := lastLine(out), fmt.Sprintf("%d passed, 0 failed, 0 skipped", len(want)); got != want {
			t.Errorf("last line %q, want %q", got, want)
		}
	})

	t.Run("json", func(t *testing.T) {
		t.Parallel()
		out, stderr, code := cliRun(t, "--plugin", brokenPlugin(t, "quoting"), "--json", "--whole-cases", "-")
		if code != 1 {
			t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
		}
		var got testharness.Summary
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("decode --json output: %v\n%s", err, out)
		}
		if dec.More() {
			t.Errorf("more than one JSON value in --json output:\n%s", out)
		}
		if q := len(quotedCases(t)); got.Passed != len(all)-q || got.Failed != q || got.Skipped != 0 {
			t.Errorf("counts passed=%d failed=%d skipped=%d, want %d, %d, 0", got.Passed, got.Failed, got.Skipped, len(all)-q, q)
		}
		var names, failed []string
		for _, r := range got.Results {
			names = append(names, r.Name)
			if !r.Passed {
				failed = append(failed, r.Name)
				if len(r.Failures) == 0 {
					t.Errorf("case %s failed with no failure text", r.Name)
				}
			}
		}
		if d := cmp.Diff(all, names); d != "" {
			t.Errorf("results (-want +got):\n%s", d)
		}
		if d := cmp.Diff(quotedCases(t), failed); d != "" {
			t.Errorf("failed cases (-want +got):\n%s", d)
		}
	})

	t.Run("usage-errors", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{
			{},
			{"--plugin", realPlugin(t), "--run", "("},
			{"--plugin", realPlugin(t), "extra"},
			{"--plugin", realPlugin(t), "--update"}, // the built-in cases are read-only
		} {
			_, stderr, code := cliRun(t, args...)
			if code != 2 {
				t.Errorf("conformance %q: exit code %d, want 2; stderr:\n%s", args, code, stderr)
			}
			if !strings.Contains(stderr, "conformance: ") {
				t.Errorf("conformance %q: stderr does not say what is wrong:\n%s", args, stderr)
			}
		}
	})

	t.Run("update", func(t *testing.T) {
		t.Parallel()
		testUpdate(t)
	})
}

// testUpdate runs --update with our plugin on a copy of the cases, one of
// whose goldens is stale. Cases the plugin already passes are left
// byte-identical; the stale one is rewritten back to the checked-in bytes
// (want/ only), and a second --update changes nothing. A fault no golden
// can express still fails under --update.
func testUpdate(t *testing.T) {
	remote := len(remoteCases(t, nil))
	dir := t.TempDir()
	orig := readCases(t, "testdata/cases")
	for name, data := range orig {
		if name == "seed-staged-remote.txtar" {
			data = []byte(strings.Replace(string(data), "mkdir -p '/var/tmp/pikaci/runs/run/jobs/job'", "mkdir -p '/stale'", 1))
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	update := func(plugin string) (string, int, map[string][]byte) {
		t.Helper()
		out, _, code := cliRun(t, "--plugin", plugin, "--cases", dir, "--update")
		return out, code, readCases(t, dir)
	}
	out, code, first := update(realPlugin(t))
	if code != 0 {
		t.Fatalf("--update: exit code %d, want 0\n%s", code, out)
	}
	if got, want := lastLine(out), fmt.Sprintf("%d passed, 0 failed, 0 skipped", remote); got != want {
		t.Errorf("--update: last line %q, want %q", got, want)
	}
	if !strings.Contains(out, "PASS seed-staged-remote (want/ updated)\n") || strings.Count(out, "(want/ updated)") != 1 {
		t.Errorf("--update: want exactly seed-staged-remote updated:\n%s", out)
	}
	if d := cmp.Diff(orig, first); d != "" {
		t.Errorf("--update did not restore the checked-in cases byte for byte (-checked-in +updated):\n%s", d)
	}
	if out, code, second := update(realPlugin(t)); code != 0 || strings.Contains(out, "(want/ updated)") || !cmp.Equal(first, second) {
		t.Errorf("a second --update was not a no-op (exit %d):\n%s", code, out)
	}

	// --update cannot hide a fault the goldens cannot express.
	out, code, after := update(brokenPlugin(t, "extra-command"))
	if code != 1 || !strings.Contains(out, "ran 2 commands") {
		t.Errorf("--update with the extra-command plugin: exit %d, want 1 with the fault named:\n%s", code, out)
	}
	for name, data := range after {
		if txtar.Parse(data).Comment == nil || !strings.Contains(string(data), "-- case.json --") {
			t.Errorf("%s: --update damaged the case", name)
		}
		if string(txtar.Parse(data).Files[0].Data) != string(txtar.Parse(orig[name]).Files[0].Data) {
			t.Errorf("%s: --update changed case.json", name)
		}
	}
}

func readCases(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.txtar"))
	if err != nil {
		tb.Fatal(err)
	}
	below, err := filepath.Glob(filepath.Join(dir, "*", "*.txtar"))
	if err != nil {
		tb.Fatal(err)
	}
	paths = append(paths, below...)
	if len(paths) == 0 {
		tb.Fatalf("no cases in %s", dir)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = data
	}
	return out
}
