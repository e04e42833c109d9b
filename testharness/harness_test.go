package testharness_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pikaci/vmexec/internal/testbin"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/tools/txtar"

	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/testharness"
)

func TestMain(m *testing.M) {
	// The broken-plugin tests run every case against each fault, and a
	// case mostly waits (on its plugin, on the bounds it tests): run more
	// of them at once than there are cores, unless -parallel says.
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(max(6, runtime.GOMAXPROCS(0)))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(testbin.Main(m))
}

// pluginFile is the file name every plugin binary here gets: the host
// requires it to match the name the plugin describes itself with.
const pluginFile = "executor-remote-linux-vm"

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
	return testbin.BuildOnce(tb, pluginFile, testbin.Plugin, "")
}

var (
	brokenMu   sync.Mutex
	brokenDirs = map[string]string{} // fault: its folder
)

// brokenPlugin is the real plugin with one fault injected; "" is the
// control, with none. Every fault is the same binary, built once, linked
// into a folder of its own beside a file that names its fault.
func brokenPlugin(tb testing.TB, fault string) string {
	tb.Helper()
	brokenMu.Lock()
	defer brokenMu.Unlock()
	if dir, ok := brokenDirs[fault]; ok {
		return filepath.Join(dir, pluginFile)
	}
	// Not tb.TempDir: every test that asks for this fault shares it.
	dir := testbin.TempDir(tb)
	bin := testbin.Install(tb, dir, pluginFile, testbin.BrokenPlugin, "")
	if fault != "" {
		if err := os.WriteFile(filepath.Join(dir, "brokenplugin.fault"), []byte(fault), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	brokenDirs[fault] = dir
	return bin
}

// conformanceCLI is the conformance command.
func conformanceCLI(tb testing.TB) string {
	tb.Helper()
	return testbin.BuildOnce(tb, "conformance", testbin.Conformance, "")
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

// longCases are the cases our plugin passes only by waiting out a bound
// of its own of 30 s or more: make test runs them, -short does not.
var longCases = []string{
	// The targeted create's POST is given 30 s
	// (incus.TargetedCreateSendTimeout) before the job moves on.
	"whole/cluster-replaced-after-hung-create",
}

func TestOurPluginPassesEveryCase(t *testing.T) {
	t.Parallel()
	bin := realPlugin(t)
	// Four plugin processes, each running a quarter of the cases in turn
	// (one process serves one runner's settings: cases cannot share it at
	// once). The cases mostly wait, so the four overlap.
	cs, err := testharness.LoadCases(testharness.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range wholeCases(t) {
		if testing.Short() && slices.Contains(longCases, n) {
			continue
		}
		names = append(names, n)
	}
	for _, c := range cs {
		names = append(names, c.Name)
	}
	const shards = 4
	groups := make([][]string, shards)
	for i, n := range names {
		groups[i%shards] = append(groups[i%shards], n)
	}
	for i, g := range groups {
		t.Run(fmt.Sprintf("shard-%d", i), func(t *testing.T) {
			t.Parallel()
			testharness.Run(t, testharness.Config{Plugin: bin, Run: exactly(g)})
		})
	}
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
		// short are the cases the fault runs against under -short, each of
		// which must fail (default: failCases). make test runs every case.
		short []string
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
			short: []string{"unstaged-remote"},
			wantAll: []string{
				"real run: the command run on the remote differs from want/mkdir",
				"directory /var/tmp/pikaci/cache/cargo-target is not on the remote after PrepareDirectories",
			},
			allowed: []string{"unlike want/mkdir", "differs from want/mkdir", "is not on the remote after PrepareDirectories"},
		},
		{
			fault:   "extra-command",
			short:   []string{"seed-staged-remote"},
			wantAll: []string{"real run: PrepareDirectories ran 2 commands on the remote, want exactly 1", "1: test -d /"},
			allowed: []string{"PrepareDirectories ran 2 commands on the remote"},
		},
		{
			fault: "wrong-device-key",
			short: []string{"seed-staged-remote"},
			wantAll: []string{
				"dry run: reported device map differs from want/devices.json",
				"real run: the instance's device map differs from want/devices.json",
				`"required"`,
			},
			allowed: []string{"device map differs from want/devices.json", "ConfigureDevices reported a device map"},
		},
		{
			fault:   "partial-apply",
			short:   []string{"device-name-collision", "mount-source-missing"},
			wantAll: []string{"real run (failed ConfigureDevices) changed the instance's devices", "pk-snapsh-"},
			allowed: []string{"real run (failed ConfigureDevices) changed the instance's devices"},
		},
		{
			fault:   "dry-run-writes",
			short:   []string{"seed-staged-remote"},
			wantAll: []string{"dry run changed the remote filesystem", "/var/tmp/pikaci/cache/cargo-home"},
			allowed: []string{"dry run changed the remote filesystem"},
		},
	}
	all := remoteCases(t, nil)
	var union []string
	for _, tt := range tests {
		switch {
		case tt.short != nil:
			union = append(union, tt.short...)
		case tt.fault != "" && tt.failCases == nil:
			t.Fatalf("fault %s: list the cases that catch it under -short", tt.fault)
		}
		union = append(union, tt.failCases...)
	}
	slices.Sort(union)
	union = slices.Compact(union)
	for _, tt := range tests {
		name := tt.fault
		if name == "" {
			name = "control"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := brokenPlugin(t, tt.fault)
			cfg := testharness.Config{Plugin: bin, WholeCases: "-"}
			all, failCases := all, tt.failCases
			if sel := shortSelection(tt.fault, tt.failCases, tt.short, union); sel != nil {
				cfg.Run, all = exactly(sel), sel
				if tt.fault != "" {
					failCases = sel
				}
			}
			results, err := testharness.RunCases(t.Context(), cfg, nil)
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
			if d := cmp.Diff(all, ran, byName); d != "" {
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
			if failCases != nil {
				if d := cmp.Diff(failCases, failed, byName); d != "" {
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

// shortCLICases are the version 1 cases the CLI's tests run under -short:
// the seed's, one without a staged snapshot, and those with a quote in a
// path (which the quoting fault fails), sorted.
func shortCLICases(tb testing.TB) []string {
	tb.Helper()
	names := append([]string{"seed-staged-remote", "unstaged-remote"}, quotedCases(tb)...)
	slices.Sort(names)
	return names
}

// byName compares lists of case names in any order.
var byName = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// exactly matches exactly the named cases (a whole-job case's name without
// its whole/ prefix, as Config.Run and --run see it).
func exactly(names []string) *regexp.Regexp {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(strings.TrimPrefix(n, testharness.WholePrefix))
	}
	return regexp.MustCompile("^(" + strings.Join(quoted, "|") + ")$")
}

// shortSelection is the cases a fault runs against: under -short only
// those that catch it (short if set, else failCases) and, for the control,
// their union, so that a contributor's loop stays fast; otherwise every
// case, as make test runs them, where the failing ones must be exactly
// failCases. It returns nil for every case.
func shortSelection(fault string, failCases, short, union []string) []string {
	switch {
	case !testing.Short():
		return nil
	case fault == "":
		return union
	case short != nil:
		return short
	}
	return failCases
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
	all, whole := remoteCases(t, nil), wholeCases(t)
	var run []string // --run under -short
	if testing.Short() {
		all, whole = shortCLICases(t), []string{testharness.WholePrefix + "seed-whole-job"}
		run = []string{"--run", exactly(append(slices.Clone(all), whole...)).String()}
	}

	t.Run("real-plugin-passes", func(t *testing.T) {
		t.Parallel()
		out, stderr, code := cliRun(t, append([]string{"--plugin", realPlugin(t)}, run...)...)
		if code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
		}
		var want []string
		for _, name := range all {
			want = append(want, "PASS "+name)
		}
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
		out, stderr, code := cliRun(t, append([]string{"--plugin", brokenPlugin(t, "quoting"), "--whole-cases", "-"}, run...)...)
		if code != 1 {
			t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
		}
		quoted := quotedCases(t)
		for _, name := range quoted {
			if !strings.Contains("\n"+out, "\nFAIL "+name+"\n    ") {
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
		if every := remoteCases(t, nil); len(want) >= len(every) {
			t.Fatalf("--run %s selects all %d cases: it would not show filtering", re, len(every))
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
		out, stderr, code := cliRun(t, append([]string{"--plugin", brokenPlugin(t, "quoting"), "--json", "--whole-cases", "-"}, run...)...)
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
	if testing.Short() {
		keep := shortCLICases(t)
		for name := range orig {
			if !slices.Contains(keep, strings.TrimSuffix(name, ".txtar")) {
				delete(orig, name)
			}
		}
		remote = len(keep)
	}
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
