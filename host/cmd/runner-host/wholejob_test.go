package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pikaci/vmexec/host"
	"github.com/pikaci/vmexec/shared"
)

// wholeJobFile writes a whole job's file for the test plugin (see
// host/testdata/testplugin/wholejob.go: argv[0] says what the job does)
// and returns its path and the job dir.
func wholeJobFile(tb testing.TB, id string, argv []string, edit func(map[string]any)) (path, jobDir string) {
	tb.Helper()
	root := tb.TempDir()
	jobDir = filepath.Join(root, "run-1", "jobs", id)
	snap := filepath.Join(root, "snapshot")
	for _, d := range []string{jobDir, snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(snap, shared.SnapshotMarker), []byte(`{"content_hash":"abc123"}`), 0o644); err != nil {
		tb.Fatal(err)
	}
	spec := testSpec(id)
	spec.Host = shared.HostPaths{JobDir: jobDir, SnapshotDir: snap, SnapshotContentHash: "abc123"}
	extra := map[string]any{
		"runtime":   map[string]any{"image": "bb", "instance_type": "container"},
		"command":   map[string]any{"argv": argv, "timeout_secs": 30},
		"artifacts": map[string]any{"max_bytes": 1000},
	}
	if edit != nil {
		edit(extra)
	}
	return writeJob(tb, spec, extra), jobDir
}

func readRecordFile(tb testing.TB, jobDir string) host.Record {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(jobDir, host.RecordFile))
	if err != nil {
		tb.Fatal(err)
	}
	var rec host.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		tb.Fatal(err)
	}
	return rec
}

func phaseList(rec host.Record) []string {
	var out []string
	for _, p := range rec.Phases {
		s := p.Name
		if p.Error != "" {
			s += " (failed)"
		}
		out = append(out, s)
	}
	return out
}

var allPhases = []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime", "launch_guest", "wait_for_completion", "collect_artifacts"}

func TestRunWholeJobExitCodes(t *testing.T) {
	dir := pluginDir(t, "whole", "oldie")
	tests := []struct {
		name       string
		id         string
		argv       []string
		plugin     string
		wantCode   int
		wantStdout string
		wantStderr []string
		wantPhases []string // nil: no record
		cleanedUp  bool
		env        map[string]string
		args       []string
		wantFail   string // the record's failure
	}{
		{
			name: "exit 0", id: "j", argv: []string{"exit", "0"}, plugin: "whole",
			wantStdout: "to stdout\n", wantStderr: []string{"to stderr\n"},
			wantPhases: allPhases, cleanedUp: true,
		},
		{
			name: "exit 3", id: "j", argv: []string{"exit", "3"}, plugin: "whole", wantCode: 3,
			wantStdout: "to stdout\n", wantStderr: []string{"to stderr\n"},
			wantPhases: allPhases, cleanedUp: true, wantFail: "build",
		},
		{
			name: "artifacts over their cap after a passing job are a system failure", id: "over-cap", argv: []string{"exit", "0"}, plugin: "whole",
			wantCode: exitSystemFailure, wantStdout: "to stdout\n", wantStderr: []string{"phase collect_artifacts", "artifacts.max_bytes 1000"},
			wantPhases: append(allPhases[:5:5], "collect_artifacts (failed)"), cleanedUp: true, wantFail: "system",
		},
		{
			name: "artifacts over their cap after a failing job: the build failed first", id: "over-cap", argv: []string{"exit", "3"}, plugin: "whole",
			wantCode: 3, wantStdout: "to stdout\n", wantStderr: []string{"phase collect_artifacts", "artifacts.max_bytes 1000"},
			wantPhases: append(allPhases[:5:5], "collect_artifacts (failed)"), cleanedUp: true, wantFail: "build",
		},
		{
			name: "--system-failure-exit-code", id: "no-image", argv: []string{"exit", "0"}, plugin: "whole", args: []string{"--system-failure-exit-code", "99"},
			wantCode: 99, wantStderr: []string{`image alias "bb" not found`},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime (failed)"}, wantFail: "system",
		},
		{
			name: "GitLab: a system failure exits SYSTEM_FAILURE_EXIT_CODE", id: "no-image", argv: []string{"exit", "0"}, plugin: "whole",
			env:      map[string]string{"BUILD_FAILURE_EXIT_CODE": "7", "SYSTEM_FAILURE_EXIT_CODE": "8"},
			wantCode: 8, wantStderr: []string{`image alias "bb" not found`},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime (failed)"}, wantFail: "system",
		},
		{
			name: "GitLab: the flag wins over SYSTEM_FAILURE_EXIT_CODE", id: "no-image", argv: []string{"exit", "0"}, plugin: "whole",
			env: map[string]string{"SYSTEM_FAILURE_EXIT_CODE": "8"}, args: []string{"--system-failure-exit-code", "9"},
			wantCode: 9, wantStderr: []string{`image alias "bb" not found`},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime (failed)"}, wantFail: "system",
		},
		{
			name: "GitLab: a job's non-zero code exits BUILD_FAILURE_EXIT_CODE", id: "j", argv: []string{"exit", "3"}, plugin: "whole",
			env:      map[string]string{"BUILD_FAILURE_EXIT_CODE": "7", "SYSTEM_FAILURE_EXIT_CODE": "8"},
			wantCode: 7, wantStdout: "to stdout\n", wantStderr: []string{"to stderr\n"},
			wantPhases: allPhases, cleanedUp: true, wantFail: "build",
		},
		{
			name: "GitLab: a passing job exits 0", id: "j", argv: []string{"exit", "0"}, plugin: "whole",
			env:        map[string]string{"BUILD_FAILURE_EXIT_CODE": "7", "SYSTEM_FAILURE_EXIT_CODE": "8"},
			wantStdout: "to stdout\n", wantStderr: []string{"to stderr\n"},
			wantPhases: allPhases, cleanedUp: true,
		},
		{
			name: "GitLab: a timeout is the build's failure", id: "j", argv: []string{"timeout"}, plugin: "whole",
			env:      map[string]string{"BUILD_FAILURE_EXIT_CODE": "7", "SYSTEM_FAILURE_EXIT_CODE": "8"},
			wantCode: 7, wantStdout: "started\n", wantStderr: []string{`job "j" timed out after 30 s`},
			wantPhases: allPhases, cleanedUp: true, wantFail: "timeout",
		},
		{
			name: "timeout", id: "j", argv: []string{"timeout"}, plugin: "whole", wantCode: exitTimedOut,
			wantStdout: "started\n", wantStderr: []string{`job "j" timed out after 30 s`},
			wantPhases: allPhases, cleanedUp: true, wantFail: "timeout",
		},
		{
			name: "executor error", id: "no-image", argv: []string{"exit", "0"}, plugin: "whole", wantCode: exitSystemFailure,
			wantStderr: []string{"phase prepare_runtime", `image alias "bb" not found`},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime (failed)"}, wantFail: "system",
		},
		{
			name: "failure after create", id: "fail-after-create", argv: []string{"exit", "0"}, plugin: "whole", wantCode: exitSystemFailure,
			wantStderr: []string{"phase prepare_runtime", "instance did not start"},
			wantPhases: []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime (failed)"}, cleanedUp: true, wantFail: "system",
		},
		{
			name: "v1 plugin", id: "j", argv: []string{"exit", "0"}, plugin: "oldie", wantCode: exitSystemFailure,
			wantStderr: []string{"plugin oldie speaks protocol 1"}, wantPhases: []string{}, wantFail: "system",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, jobDir := wholeJobFile(t, tt.id, tt.argv, nil)
			args := append([]string{"run", "--plugin-dir", dir, "--plugin", tt.plugin, "--job", job}, tt.args...)
			code, stdout, stderr := runMainEnv(t, tt.env, args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout %q, want %q", stdout, tt.wantStdout)
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr does not contain %q", s)
				}
			}
			rec := readRecordFile(t, jobDir)
			if rec.Failure != tt.wantFail {
				t.Errorf("record failure %q, want %q", rec.Failure, tt.wantFail)
			}
			if diff := cmp.Diff(tt.wantPhases, phaseList(rec), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("record phases (-want +got):\n%s", diff)
			}
			if tt.cleanedUp && (rec.Cleanup == nil || !rec.Cleanup.Deleted) {
				t.Errorf("cleanup record %+v, want the instance deleted", rec.Cleanup)
			}
			if ranRuntime := slices.Contains(tt.wantPhases, "prepare_runtime") || slices.Contains(tt.wantPhases, "prepare_runtime (failed)"); ranRuntime != (rec.Cleanup != nil) {
				t.Errorf("cleanup record %+v; want one exactly when prepare_runtime ran", rec.Cleanup)
			}
			if _, err := os.Stat(filepath.Join(jobDir, "testplugin-instance")); !os.IsNotExist(err) {
				t.Errorf("instance left behind (stat: %v)", err)
			}
		})
	}
}

func TestRunWholeJobJSON(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, jobDir := wholeJobFile(t, "j", []string{"exit", "3"}, nil)
	code, stdout, stderr := runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job, "--json")
	if code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	var rec host.Record
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		t.Fatalf("stdout is not one record: %v", err)
	}
	if diff := cmp.Diff(readRecordFile(t, jobDir), rec); diff != "" {
		t.Errorf("printed record differs from the file (-file +printed):\n%s", diff)
	}
	if rec.ExitCode == nil || *rec.ExitCode != 3 || rec.Image.Fingerprint != "f00d" || rec.Snapshot.BytesSent != 1234 {
		t.Errorf("record %+v", rec)
	}
	for _, s := range []string{"stdout: to stdout\n", "stderr: to stderr\n"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr does not contain %q", s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once,
// which tells when it first holds a string.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.want) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A signal mid-job ends runner-host with 128+signal, after cleanup.
func TestRunWholeJobSignal(t *testing.T) {
	dir := pluginDir(t, "whole")
	for _, tt := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			job, jobDir := wholeJobFile(t, "j", []string{"block"}, nil)
			ctx, cancel := context.WithCancelCause(t.Context())
			defer cancel(nil)
			stdout := &syncBuffer{want: "started", seen: make(chan struct{})}
			var stderr bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- Main(ctx, &App{Stdout: stdout, Stderr: &stderr}, []string{"run", "--plugin-dir", dir, "--plugin", "whole", "--job", job})
			}()
			select {
			case <-stdout.seen:
			case <-time.After(30 * time.Second):
				t.Fatalf("the job never started; stdout %q", stdout.String())
			}
			cancel(&signalCause{sig: tt.sig})
			var code int
			select {
			case code = <-done:
			case <-time.After(90 * time.Second):
				t.Fatal("runner-host did not end after the signal")
			}
			if code != tt.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.want, stderr.String())
			}
			rec := readRecordFile(t, jobDir)
			if rec.Cleanup == nil || !rec.Cleanup.Deleted {
				t.Errorf("cleanup record %+v, want the instance deleted", rec.Cleanup)
			}
			if rec.Failure != host.FailureCancelled {
				t.Errorf("record failure %q, want %q", rec.Failure, host.FailureCancelled)
			}
			if _, err := os.Stat(filepath.Join(jobDir, "testplugin-instance")); !os.IsNotExist(err) {
				t.Errorf("instance left behind (stat: %v)", err)
			}
		})
	}
}

func TestRunWholeJobBadFile(t *testing.T) {
	dir := pluginDir(t, "whole")
	tests := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"unknown runtime field", func(m map[string]any) { m["runtime"].(map[string]any)["imag"] = "x" }, `unknown field "imag"`},
		{"unknown command field", func(m map[string]any) { m["command"].(map[string]any)["args"] = []string{} }, `unknown field "args"`},
		{"unknown artifacts field", func(m map[string]any) { m["artifacts"].(map[string]any)["max"] = 1 }, `unknown field "max"`},
		{"runtime without command", func(m map[string]any) { delete(m, "command") }, "has a runtime but no command"},
		{"command without runtime", func(m map[string]any) { delete(m, "runtime") }, "has a command but no runtime"},
		{"invalid value", func(m map[string]any) { m["command"].(map[string]any)["cwd"] = "rel" }, `command.cwd "rel" is not absolute`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, _ := wholeJobFile(t, "j", []string{"exit", "0"}, tt.edit)
			code, _, stderr := runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job)
			if code != exitSystemFailure {
				t.Errorf("exit code %d, want %d", code, exitSystemFailure)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q", tt.want)
			}
		})
	}
}

func TestRunWholeJobRefusesPhases(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, _ := wholeJobFile(t, "j", []string{"exit", "0"}, nil)
	code, _, stderr := runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job, "--phases", "prepare-directories")
	// Found wrong once the job file is read, it is still the command
	// line's fault: the usage code, not the system-failure code.
	if code != exitUsage || !strings.Contains(stderr, "--phases applies to a job without runtime and command") {
		t.Errorf("exit %d, stderr %q; want %d", code, stderr, exitUsage)
	}
	// check takes none of run's flags that only a run reads.
	for _, flag := range []string{"--phases=prepare-directories", "--dry-run", "--quiet"} {
		code, _, stderr := runMain(t, "check", "--plugin-dir", dir, "--plugin", "whole", "--job", job, flag)
		if code != exitUsage || !strings.Contains(stderr, "flag provided but not defined") {
			t.Errorf("check %s: exit %d, stderr %q; want a usage error", flag, code, stderr)
		}
	}
}

// TestSweepNamesTheInstancesOfAMemberThatDidNotAnswer: the text output
// says what a cluster sweep left on a member that did not answer, and does
// not claim there was nothing to delete.
func TestSweepNamesTheInstancesOfAMemberThatDidNotAnswer(t *testing.T) {
	var out bytes.Buffer
	a := &App{Stdout: &out}
	f := sweepFlags{olderThan: time.Hour}
	f.remote.Host, f.remote.Incus.Project = "api", "ci"
	a.printSweep(f, shared.SweepRequest{}, shared.SweepResult{Unreachable: []string{"pikaci-abc on m3"}})
	want := "left pikaci-abc on m3: its member did not answer\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
}

func TestRunWholeJobDryRun(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, jobDir := wholeJobFile(t, "j", []string{"exit", "3"}, nil)
	code, stdout, _ := runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job, "--dry-run")
	if code != exitOK {
		t.Errorf("exit code %d", code)
	}
	for _, s := range []string{"plugin whole 0.0.1-test protocol=2\n", `dry run of job "j" (run "run-1")`,
		"prepare_runtime: would create instance pikaci-test in project \"p\":\n", "  image: \"bb\" (fingerprint f00d)\n",
		"  argv: \"exit\" \"3\"\n"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("stdout does not contain %q", s)
		}
	}
	if _, err := os.Stat(filepath.Join(jobDir, "testplugin-instance")); !os.IsNotExist(err) {
		t.Errorf("a dry run created the instance (stat: %v)", err)
	}
}

func TestSweep(t *testing.T) {
	dir := pluginDir(t, "whole", "oldie")
	live := filepath.Join(t.TempDir(), "live")
	if err := os.WriteFile(live, []byte("# running now\nrun-1:job-1\n\nrun-2:job 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"sweep", "--plugin-dir", dir, "--plugin", "whole", "--host", "pika-build", "--project", "ci", "--older-than", "6h"}

	code, stdout, _ := runMain(t, append(args, "--live", live, "--dry-run")...)
	want := "would delete pika-build/ci older than 6h0m0s\nwould delete run-1:job-1\nwould delete run-2:job 2\n"
	if code != exitOK || stdout != want {
		t.Errorf("exit %d, stdout %q, want 0 and %q", code, stdout, want)
	}

	code, stdout, _ = runMain(t, append(args, "--json")...)
	var res shared.SweepResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != exitOK {
		t.Fatalf("exit %d, stdout %q: %v", code, stdout, err)
	}
	if diff := cmp.Diff(shared.SweepResult{Deleted: []string{"pika-build/ci older than 6h0m0s"}}, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}

	code, _, stderr := runMain(t, "sweep", "--plugin-dir", dir, "--plugin", "oldie", "--host", "h", "--project", "p", "--older-than", "1h")
	if code != exitSystemFailure || !strings.Contains(stderr, "plugin oldie speaks protocol 1") {
		t.Errorf("v1 plugin: exit %d, stderr %q", code, stderr)
	}

	bad := filepath.Join(t.TempDir(), "live")
	if err := os.WriteFile(bad, []byte("justajob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runMain(t, append(args, "--live", bad)...)
	if code != exitSystemFailure || !strings.Contains(stderr, `"justajob" is not RUN:JOB`) {
		t.Errorf("bad live file: exit %d, stderr %q", code, stderr)
	}

	// A value given but invalid is named as such, never "required".
	for _, v := range []string{"-1s", "-0.5h", "6 hours", "1d"} {
		a := append(slices.Clone(args[:len(args)-1]), v)
		code, _, stderr := runMain(t, a...)
		if code != exitUsage || !strings.Contains(stderr, `--older-than "`+v+`"`) || strings.Contains(stderr, "required") {
			t.Errorf("--older-than %s: exit %d, stderr %q; want a usage error naming the value", v, code, stderr)
		}
	}

	for _, missing := range []string{"--host", "--project", "--older-than"} {
		var a []string
		for i := 0; i < len(args); i++ {
			if args[i] == missing {
				i++
				continue
			}
			a = append(a, args[i])
		}
		code, _, stderr := runMain(t, a...)
		if code != exitUsage || !strings.Contains(stderr, missing+" is required") {
			t.Errorf("without %s: exit %d, stderr %q", missing, code, stderr)
		}
	}
}

func TestLineWriter(t *testing.T) {
	var out bytes.Buffer
	a := &lineWriter{prefix: "stdout: ", w: &out}
	b := &lineWriter{prefix: "stderr: ", w: &out}
	for _, w := range []struct {
		w *lineWriter
		s string
	}{{a, "par"}, {b, "err 1\nerr"}, {a, "tial\nnext\n"}, {b, " 2"}} {
		if _, err := w.w.Write([]byte(w.s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(a.Flush(), b.Flush()); err != nil {
		t.Fatal(err)
	}
	want := "stderr: err 1\nstdout: partial\nstdout: next\nstderr: err 2\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

// A plugin killed mid-RunJob: runner-host restarts it to clean up, and
// exits 1 with the record naming wait_for_completion.
func TestRunWholeJobPluginKilled(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, jobDir := wholeJobFile(t, "j", []string{"block"}, nil)
	stdout := &syncBuffer{want: ")\n", seen: make(chan struct{})}
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(t.Context(), &App{Stdout: stdout, Stderr: &stderr}, []string{"run", "--plugin-dir", dir, "--plugin", "whole", "--job", job})
	}()
	select {
	case <-stdout.seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("the job never started; stdout %q", stdout.String())
	}
	_, rest, _ := strings.Cut(stdout.String(), "(pid ")
	pid, err := strconv.Atoi(strings.TrimSuffix(rest, ")\n"))
	if err != nil {
		t.Fatalf("no pid in %q", stdout.String())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case code = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("runner-host did not end after the plugin died")
	}
	if code != exitSystemFailure || !strings.Contains(stderr.String(), "phase wait_for_completion") {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitSystemFailure, stderr.String())
	}
	rec := readRecordFile(t, jobDir)
	want := []string{"prepare_directories", "stage_workspace_snapshot", "prepare_runtime", "launch_guest", "wait_for_completion (failed)"}
	if diff := cmp.Diff(want, phaseList(rec)); diff != "" {
		t.Errorf("phases (-want +got):\n%s", diff)
	}
	if rec.Failure != host.FailureSystem {
		t.Errorf("record failure %q, want %q", rec.Failure, host.FailureSystem)
	}
	if rec.Cleanup == nil || !rec.Cleanup.Deleted {
		t.Errorf("cleanup record %+v, want the instance deleted", rec.Cleanup)
	}
	if _, err := os.Stat(filepath.Join(jobDir, "testplugin-instance")); !os.IsNotExist(err) {
		t.Errorf("instance left behind (stat: %v)", err)
	}
}

func TestExitCodeVariablesOutOfRangeAreRefusedNamingTheValue(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, _ := wholeJobFile(t, "j", []string{"exit", "0"}, nil)
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env: map[string]string{"SYSTEM_FAILURE_EXIT_CODE": "abc"}, want: `SYSTEM_FAILURE_EXIT_CODE="abc"`},
		{env: map[string]string{"BUILD_FAILURE_EXIT_CODE": "0"}, want: `BUILD_FAILURE_EXIT_CODE="0"`},
		{env: map[string]string{"BUILD_FAILURE_EXIT_CODE": "256"}, want: `BUILD_FAILURE_EXIT_CODE="256"`},
		{args: []string{"--system-failure-exit-code", "0"}, want: "--system-failure-exit-code 0"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			args := append([]string{"run", "--plugin-dir", dir, "--plugin", "whole", "--job", job}, tt.args...)
			code, _, stderr := runMainEnv(t, tt.env, args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q: want %d naming %s", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

func TestRunWholeJobPrintsALineAPhaseAndASummaryUnlessQuiet(t *testing.T) {
	dir := pluginDir(t, "whole")
	job, jobDir := wholeJobFile(t, "j", []string{"exit", "3"}, nil)
	code, stdout, stderr := runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job)
	if code != 3 || stdout != "to stdout\n" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	want := []string{
		"runner-host: preflight: 3 checks passed in ",
		"runner-host: remote directories ready in ",
		"runner-host: staged snapshot abc123: 1.2 kB sent in ",
		"runner-host: instance pikaci-test ready in ",
		"to stderr",
		"runner-host: collected 1 artifact, 5 B, in ",
		"runner-host: exit 3 (build failure) after ",
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q", w)
		}
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "runner-host: exit 3 (build failure) after ") || !strings.HasSuffix(last, "; record "+filepath.Join(jobDir, host.RecordFile)) {
		t.Errorf("last line %q: want the summary naming the record", last)
	}

	code, stdout, stderr = runMain(t, "run", "--plugin-dir", dir, "--plugin", "whole", "--job", job, "--quiet")
	if code != 3 || stdout != "to stdout\n" || stderr != "to stderr\n" {
		t.Errorf("--quiet: exit %d, stdout %q, stderr %q; want only the job's output", code, stdout, stderr)
	}
}

// A relative --work-dir and a --member that is not NAME=SSH_HOST are
// usage errors naming the value, before any plugin is loaded.
func TestSweepWorkDirAndMemberValuesAreChecked(t *testing.T) {
	base := []string{"sweep", "--plugin-dir", t.TempDir(), "--host", "h", "--project", "p", "--older-than", "1h"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--work-dir", "var/tmp/pikaci"}, `--work-dir "var/tmp/pikaci"`},
		{[]string{"--work-dir", "/var/tmp/../pikaci"}, `--work-dir "/var/tmp/../pikaci"`},
		{[]string{"--work-dir", "/w", "--member", "m1"}, `"m1" is not NAME=SSH_HOST`},
		{[]string{"--work-dir", "/w", "--member", "m1=a b"}, `"m1=a b" is not NAME=SSH_HOST`},
		{[]string{"--work-dir", "/w", "--member", "m1=a", "--member", "m1=b"}, "member m1 given twice"},
	} {
		code, _, stderr := runMain(t, append(slices.Clone(base), c.args...)...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want a usage error with %q", c.args, code, stderr, c.want)
		}
	}
}

// TestProgressShowsThePhaseInProgressOnATerminalOnly: on a terminal the
// phase in progress is shown while it runs and erased when its own line
// comes; elsewhere (a pipe, a log file) only the phase's line is written.
func TestProgressShowsThePhaseInProgressOnATerminalOnly(t *testing.T) {
	for _, tty := range []bool{true, false} {
		var out bytes.Buffer
		p := &progress{w: &out, tty: tty}
		p.phaseStart(host.PhasePrepareDirectories)
		p.phase(host.PhaseRecord{Name: host.PhasePrepareDirectories, DurationMS: 12}, host.Record{})
		got := out.String()
		inProgress := "runner-host: " + host.PhasePrepareDirectories + " …\r\x1b[K"
		if tty != strings.HasPrefix(got, inProgress) {
			t.Errorf("tty %v: output %q; want the in-progress line and its erasure only on a terminal", tty, got)
		}
		if !strings.HasSuffix(got, "runner-host: remote directories ready in "+secs(12)+"\n") || strings.Count(got, "\n") != 1 {
			t.Errorf("tty %v: output %q; want the phase's one line last", tty, got)
		}
	}
}

// TestSweepPrintsAPathWithAControlCharacterEscaped: the paths a sweep
// names come from a remote listing; one holding an escape sequence is
// printed quoted and escaped.
func TestSweepPrintsAPathWithAControlCharacterEscaped(t *testing.T) {
	var out bytes.Buffer
	a := &App{Stdout: &out}
	a.printSweep(sweepFlags{olderThan: time.Hour}, shared.SweepRequest{WorkDir: "/w"},
		shared.SweepResult{Deleted: []string{"pikaci-a"}, Removed: []string{"h:/w/runs/\x1b]0;owned\a"}})
	if strings.ContainsAny(out.String(), "\x1b\a") || !strings.Contains(out.String(), `removed "h:/w/runs/\x1b]0;owned\a"`) {
		t.Errorf("printed %q; want the path quoted and escaped", out.String())
	}
}
