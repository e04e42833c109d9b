package host

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// open loads the test plugin under name and closes it at cleanup.
func open(tb testing.TB, name string, opts Options) *Plugin {
	tb.Helper()
	dir := pluginDir(tb, name)
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	opts.PluginDir = dir
	p, err := Dispense(tb.Context(), name, opts)
	if err != nil {
		tb.Fatalf("Dispense %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// job runs PrepareDirectories for a job id, which tells the test plugin
// what to do.
func job(ctx context.Context, p *Plugin, id string) (shared.PrepareResult, error) {
	return p.PrepareDirectories(ctx, shared.PrepareRequest{Spec: shared.JobSpec{Job: shared.Job{ID: id}}})
}

func TestLoad(t *testing.T) {
	dir := pluginDir(t, "alpha", "beta")
	// Not plugins: not executable, no name, another prefix, a directory.
	for name, mode := range map[string]os.FileMode{"executor-notexec": 0o644, "executor-": 0o755, "other": 0o755} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "executor-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	settings := shared.Settings{SSHConfigPath: "/etc/runner/ssh_config", MaxSessionsPerHost: 4}
	reg, err := Load(t.Context(), Options{PluginDir: dir, Settings: settings, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })

	var names []string
	for _, p := range reg.Plugins() {
		names = append(names, p.Name())
	}
	if diff := cmp.Diff([]string{"alpha", "beta"}, names); diff != "" {
		t.Fatalf("plugins (-want +got):\n%s", diff)
	}
	wantSum, err := fileSHA256(testPlugin(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range reg.Plugins() {
		t.Run(p.Name(), func(t *testing.T) {
			want := shared.Info{Name: p.Name(), Version: "0.0.1-test", Protocol: 1, Capabilities: []string{"test"}}
			if diff := cmp.Diff(want, p.Info()); diff != "" {
				t.Errorf("Info (-want +got):\n%s", diff)
			}
			if p.SHA256() != wantSum {
				t.Errorf("SHA256 %s, want %s", p.SHA256(), wantSum)
			}
			res, err := job(t.Context(), p, "settings")
			if err != nil {
				t.Fatal(err)
			}
			if res.Command != settings.SSHConfigPath {
				t.Errorf("plugin was configured with SSH config %q, want %q", res.Command, settings.SSHConfigPath)
			}
		})
	}
	if _, err := reg.Get("gamma"); !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), "alpha, beta") {
		t.Errorf("Get(gamma) = %v, want not found listing alpha, beta", err)
	}
}

func TestLoadMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Load(t.Context(), Options{PluginDir: dir})
	if !errors.Is(err, shared.ErrNotFound) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load(%s) = %v, want not found naming the dir", dir, err)
	}
}

func TestRequireSHA256(t *testing.T) {
	good, err := fileSHA256(testPlugin(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		tamper   bool // change one byte of the binary
		pins     map[string]string
		wantKind error // nil: loads
		wantIn   []string
	}{
		{name: "pinned and matching", pins: map[string]string{"p": good}},
		{
			name: "one byte changed", tamper: true, pins: map[string]string{"p": good},
			wantKind: shared.ErrPermission, wantIn: []string{"plugin p refused", good /* want */},
		},
		{
			name: "malformed pin", pins: map[string]string{"p": "abc"},
			wantKind: shared.ErrInvalidInput, wantIn: []string{`"abc"`},
		},
		{
			name: "pinned plugin missing", pins: map[string]string{"p": good, "q": good},
			wantKind: shared.ErrNotFound, wantIn: []string{"plugin q is pinned", "executor-q"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, Prefix+"p")
			copyFile(t, testPlugin(t), path)
			if tt.tamper {
				tamper(t, path)
			}
			reg, err := Load(t.Context(), Options{PluginDir: dir, RequireSHA256: tt.pins, Logger: hclog.NewNullLogger()})
			if tt.wantKind == nil {
				if err != nil {
					t.Fatal(err)
				}
				_ = reg.Close()
				return
			}
			if err == nil {
				_ = reg.Close()
				t.Fatal("loaded")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, tt.wantKind) {
				t.Errorf("error %v is not %v", err, tt.wantKind)
			}
			want := tt.wantIn
			if tt.tamper {
				got, serr := fileSHA256(path)
				if serr != nil {
					t.Fatal(serr)
				}
				want = append(want, got)
				var ce *ChecksumError
				if !errors.As(err, &ce) || ce.Want != good || ce.Got != got {
					t.Errorf("error %#v, want a *ChecksumError with Want %s, Got %s", err, good, got)
				}
			}
			for _, s := range want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// tamper changes one byte of the file at path, in its data, not its header.
func tamper(tb testing.TB, path string) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o755); err != nil {
		tb.Fatal(err)
	}
}

func TestVersionNegotiation(t *testing.T) {
	v1 := map[int]plugin.PluginSet{1: shared.VersionedPlugins[1]}
	v12 := map[int]plugin.PluginSet{1: shared.VersionedPlugins[1], 2: shared.VersionedPlugins[1]}
	tests := []struct {
		name    string
		plugin  string // its name says which versions it serves
		host    map[int]plugin.PluginSet
		want    int      // negotiated protocol; 0: refused
		wantErr []string // for a refusal, both sides' versions
	}{
		{name: "plugin v1, host v1", plugin: "p", host: v1, want: 1},
		{name: "plugin v1 and v2, host v1", plugin: "p-v12", host: v1, want: 1},
		{name: "plugin v1 and v2, host v1 and v2", plugin: "p-v12", host: v12, want: 2},
		{name: "plugin v1, host v1 and v2", plugin: "p", host: v12, want: 1},
		{
			name: "plugin v2 only, host v1", plugin: "p-v2only", host: v1,
			wantErr: []string{"host protocol versions [1]", "Plugin version: 2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := pluginDir(t, tt.plugin)
			reg, err := Load(t.Context(), Options{PluginDir: dir, versions: tt.host, Logger: hclog.NewNullLogger()})
			if tt.want == 0 {
				if err == nil {
					_ = reg.Close()
					t.Fatal("loaded")
				}
				t.Logf("error: %v", err)
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = reg.Close() })
			p, err := reg.Get(tt.plugin)
			if err != nil {
				t.Fatal(err)
			}
			// The plugin reports the version of the set it serves.
			if got := p.Info().Protocol; got != tt.want {
				t.Errorf("protocol %d, want %d", got, tt.want)
			}
		})
	}
}

func TestErrorKindFromPluginProcess(t *testing.T) {
	p := open(t, "p", Options{})
	_, err := job(t.Context(), p, "not-found")
	if !errors.Is(err, shared.ErrNotFound) {
		t.Fatalf("error %v is not ErrNotFound", err)
	}
	var e *shared.Error
	if !errors.As(err, &e) || e.Field != "job.id" || e.Value != "not-found" || e.Error() != `job "not-found" not found` {
		t.Errorf("error %#v, want *shared.Error{Field: job.id, Value: not-found} with the plugin's message", err)
	}
	_, err = p.ConfigureDevices(t.Context(), shared.DevicesRequest{Spec: shared.JobSpec{Job: shared.Job{ID: "j", WritableWorkspace: true}}})
	if !errors.Is(err, shared.ErrInvalidInput) || !strings.Contains(err.Error(), "writable workspace") {
		t.Errorf("ConfigureDevices(writable) = %v, want invalid input about the writable workspace", err)
	}
}

func TestCrashedPluginIsRestarted(t *testing.T) {
	tests := []struct {
		name      string
		crash     func(t *testing.T, p *Plugin, logs *logBuffer) error
		wantState string
	}{
		{
			name: "exits mid-call",
			crash: func(t *testing.T, p *Plugin, _ *logBuffer) error {
				_, err := job(t.Context(), p, "exit")
				return err
			},
			wantState: "exited with status 2",
		},
		{
			name: "killed mid-call",
			crash: func(t *testing.T, p *Plugin, logs *logBuffer) error {
				pid := p.Pid()
				errc := make(chan error, 1)
				go func() {
					_, err := job(t.Context(), p, "block")
					errc <- err
				}()
				logs.waitFor(t, "blocking until the context ends")
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				return <-errc
			},
			wantState: "was killed (signal: killed)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := testLogger(hclog.Info)
			p := open(t, "crashy", Options{Logger: logger})
			// Settings given after load must survive the restart.
			settings := shared.Settings{SSHConfigPath: "/after/load"}
			if err := p.Configure(t.Context(), settings); err != nil {
				t.Fatal(err)
			}
			oldPid := p.Pid()
			res, err := job(t.Context(), p, "spawn")
			if err != nil {
				t.Fatal(err)
			}
			child, err := strconv.Atoi(res.Command)
			if err != nil {
				t.Fatal(err)
			}

			err = tt.crash(t, p, logs)
			t.Logf("error: %v", err)
			if !errors.Is(err, shared.ErrUnavailable) || !errors.Is(err, shared.ErrPluginExited) {
				t.Fatalf("error %v, want ErrUnavailable and ErrPluginExited", err)
			}
			for _, s := range []string{"plugin crashy (pid " + strconv.Itoa(oldPid) + ")", tt.wantState, "PrepareDirectories", "restarted"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if !processGone(t, child) {
				t.Errorf("child %d of the crashed plugin still runs", child)
			}

			res, err = job(t.Context(), p, "settings")
			if err != nil {
				t.Fatalf("call after the crash: %v", err)
			}
			if res.Command != settings.SSHConfigPath {
				t.Errorf("restarted plugin has SSH config %q, want %q", res.Command, settings.SSHConfigPath)
			}
			if pid := p.Pid(); pid == oldPid || pid == 0 {
				t.Errorf("pid after restart %d, old pid %d", pid, oldPid)
			}
		})
	}
}

func TestExitBetweenCallsRestartsQuietly(t *testing.T) {
	p := open(t, "p", Options{})
	oldPid := p.Pid()
	if err := syscall.Kill(oldPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !processGone(t, oldPid) {
		t.Fatal("plugin survived SIGKILL")
	}
	// Give go-plugin a moment to reap it; either way the call must work.
	for i := 0; i < 100 && p.Pid() != 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	res, err := job(t.Context(), p, "pid")
	if err != nil && !errors.Is(err, shared.ErrPluginExited) {
		t.Fatalf("first call after the exit: %v", err)
	}
	if err != nil {
		// The exit was not noticed before the call; the next one works.
		res, err = job(t.Context(), p, "pid")
		if err != nil {
			t.Fatal(err)
		}
	}
	if res.Command == strconv.Itoa(oldPid) {
		t.Errorf("answered by the killed process %d", oldPid)
	}
}

func TestCloseLeavesNoProcess(t *testing.T) {
	p := open(t, "p", Options{})
	pid := p.Pid()
	res, err := job(t.Context(), p, "spawn")
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(res.Command)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{pid, child} {
		if state, err := procState(id); err != nil || state == "Z" {
			t.Fatalf("pid %d not running before Close: state %q, %v", id, state, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]int{"plugin": pid, "child": child} {
		if !processGone(t, id) {
			t.Errorf("%s pid %d still runs after Close", name, id)
		}
	}
	if _, err := p.Describe(t.Context()); !errors.Is(err, shared.ErrUnavailable) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("call after Close = %v, want unavailable: closed", err)
	}
}

func TestContextReachesPluginProcess(t *testing.T) {
	tests := []struct {
		name       string
		ctx        func(context.Context) (context.Context, context.CancelFunc)
		cancelNow  bool
		want       error
		pluginSees []string
	}{
		{
			name:       "cancel",
			ctx:        context.WithCancel,
			cancelNow:  true,
			want:       context.Canceled,
			pluginSees: []string{"context canceled"},
		},
		{
			name: "deadline",
			ctx: func(ctx context.Context) (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 300*time.Millisecond)
			},
			want: context.DeadlineExceeded,
			// The host's cancellation often arrives before the plugin's
			// copy of the deadline fires.
			pluginSees: []string{"context deadline exceeded", "context canceled"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := testLogger(hclog.Info)
			p := open(t, "p", Options{Logger: logger})
			pid := p.Pid()
			ctx, cancel := tt.ctx(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := job(ctx, p, "block")
				errc <- err
			}()
			logs.waitFor(t, "blocking until the context ends")
			if tt.cancelNow {
				cancel()
			}
			if err := <-errc; !errors.Is(err, tt.want) {
				t.Errorf("host got %v, want %v", err, tt.want)
			}
			e := logs.waitFor(t, "call ended by its context")
			if got, _ := e["error"].(string); !contains(tt.pluginSees, got) {
				t.Errorf("plugin saw %q, want one of %q", got, tt.pluginSees)
			}
			if p.Pid() != pid {
				t.Errorf("a cancelled call restarted the plugin: pid %d, was %d", p.Pid(), pid)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestPluginLogsKeepTheirLevel(t *testing.T) {
	all := []string{"trace", "debug", "info", "warn", "error"}
	tests := []struct {
		level hclog.Level
		want  []string
	}{
		{level: hclog.Trace, want: all},
		{level: hclog.Info, want: all[2:]},
		{level: hclog.Error, want: all[4:]},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			logger, logs := testLogger(tt.level)
			p := open(t, "p", Options{Logger: logger})
			if _, err := job(t.Context(), p, "log"); err != nil {
				t.Fatal(err)
			}
			// The error line is logged last, and every level lets it through.
			logs.waitFor(t, "level probe")
			deadline := time.Now().Add(10 * time.Second)
			var got []string
			for {
				got = got[:0]
				for _, e := range logs.entries(t) {
					if e["@message"] == "level probe" {
						if e["@level"] != e["level"] {
							t.Errorf("line logged at %v reached the host at %v", e["level"], e["@level"])
						}
						got = append(got, e["@level"].(string))
					}
				}
				if len(got) >= len(tt.want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("levels forwarded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRestartRunsOnlyTheLoadedBinary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, Prefix+"p")
	copyFile(t, testPlugin(t), path)
	p, err := Dispense(t.Context(), "p", Options{PluginDir: dir, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	loaded := p.SHA256()

	// An upgrade replaces the file while the plugin runs; then it crashes.
	next := filepath.Join(dir, "next")
	copyFile(t, testPlugin(t), next)
	tamper(t, next)
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	if _, err := job(t.Context(), p, "exit"); !errors.Is(err, shared.ErrPluginExited) {
		t.Fatalf("crash: %v", err)
	}

	_, err = job(t.Context(), p, "pid")
	t.Logf("error: %v", err)
	var ce *ChecksumError
	if !errors.As(err, &ce) || ce.Want != loaded || ce.Got == loaded {
		t.Fatalf("restart with another binary on disk = %v, want a *ChecksumError wanting %s", err, loaded)
	}
	if !errors.Is(err, shared.ErrUnavailable) || !errors.Is(err, shared.ErrPermission) {
		t.Errorf("error %v, want ErrUnavailable and ErrPermission", err)
	}
}

func TestCloseIsGraceful(t *testing.T) {
	logger, logs := testLogger(hclog.Info)
	p := open(t, "p", Options{Logger: logger})
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// shared.Serve closed the executor before the process exited, and Close
	// waited for its last log lines.
	for _, e := range logs.entries(t) {
		if e["@message"] == "executor closed" {
			return
		}
	}
	t.Errorf("the plugin's executor was not closed; host log:\n%s", logs)
}
