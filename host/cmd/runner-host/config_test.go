package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pikaci/vmexec/internal/testbin"
)

// runnerHostBin runs the real runner-host binary (built once) with args,
// env added to a clean environment (no VMEXEC_CONFIG, no GitLab codes
// unless env sets them), and returns its exit code and output.
func runnerHostBin(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	bin := testbin.BuildOnce(t, "runner-host", testbin.RunnerHost, "")
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	code = cmd.ProcessState.ExitCode()
	t.Logf("%s runner-host %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(env, " "), strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// configFile writes a config file into its own folder.
func configFile(t *testing.T, content string) string {
	t.Helper()
	return writeFile(t, filepath.Join(t.TempDir(), "runner.toml"), content)
}

// shownValues runs config show --json and returns each key's value and
// source.
func shownValues(t *testing.T, env []string, args ...string) map[string][2]string {
	t.Helper()
	code, stdout, _ := runnerHostBin(t, env, append([]string{"config", "show", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("config show: exit %d", code)
	}
	var shown shownConfig
	if err := json.Unmarshal([]byte(stdout), &shown); err != nil {
		t.Fatalf("config show --json: %v", err)
	}
	out := map[string][2]string{}
	for _, v := range shown.Values {
		out[v.Key] = [2]string{string(v.Value), v.From}
	}
	return out
}

// jobOnlyCommand writes a job file with no runtime and no remote: the
// config gives them.
func jobOnlyCommand(t *testing.T, runtime map[string]any) (path, jobDir string) {
	t.Helper()
	return wholeJobFile(t, "cfg", []string{"exit", "0"}, func(m map[string]any) {
		delete(m, "runtime")
		delete(m, "artifacts")
		if runtime != nil {
			m["runtime"] = runtime
		}
	})
}

// TestConfigPrecedenceIsDefaultThenConfigThenJobThenFlag: config show
// names, for each value, where it came from: the config file's value (with
// its line) under the job file's, the flag's over both, the contract's
// default where no one sets it.
func TestConfigPrecedenceIsDefaultThenConfigThenJobThenFlag(t *testing.T) {
	cfg := configFile(t, `log_level = "info"
log_format = "json"
plugin_dir = "plugins"

[runtime]
image = "cfg-image"
instance_type = "container"

[runtime.limits]
memory = "1GiB"

[artifacts]
max_files = 77
`)
	job, _ := jobOnlyCommand(t, map[string]any{"image": "job-image"})
	got := shownValues(t, nil, "--config", cfg, "--job", job, "--log-level", "error")
	want := map[string][2]string{
		"runtime.image":              {`"job-image"`, "job " + job},
		"runtime.instance_type":      {`"container"`, "config " + cfg + ":7"},
		"runtime.limits.memory":      {`"1GiB"`, "config " + cfg + ":10"},
		"runtime.limits.cpu":         {`2`, "default"},
		"artifacts.max_files":        {`77`, "config " + cfg + ":13"},
		"artifacts.max_bytes":        {`1073741824`, "default"},
		"job.id":                     {`"cfg"`, "job " + job},
		"log_level":                  {`"error"`, "flag --log-level"},
		"log_format":                 {`"json"`, "config " + cfg + ":2"},
		"plugin_dir":                 {`"` + filepath.Join(filepath.Dir(cfg), "plugins") + `"`, "config " + cfg + ":3"},
		"remote.incus.endpoint":      {`"unix:///var/lib/incus/unix.socket"`, "default"},
		"command.timeout_secs":       {`30`, "job " + job},
		"runtime.ready_timeout_secs": {`120`, "default"},
	}
	for k, w := range want {
		if diff := cmp.Diff(w, got[k]); diff != "" {
			t.Errorf("%s (-want +got):\n%s", k, diff)
		}
	}
}

// TestConfigRunTakesTheRuntimeFromTheConfigUnderTheJobAndThePluginDirUnderTheFlag:
// run, not only config show, uses the merged job: a job file with a
// command and no runtime runs on the config's image; a job naming its own
// image runs on that; the config's plugin_dir is where the plugin is
// looked up unless --plugin-dir says otherwise.
func TestConfigRunTakesTheRuntimeFromTheConfigUnderTheJobAndThePluginDirUnderTheFlag(t *testing.T) {
	dir := pluginDir(t, "whole")
	empty := t.TempDir()
	cfg := configFile(t, `plugin_dir = "`+dir+`"

[runtime]
image = "cfg-image"
instance_type = "container"
`)
	for _, tc := range []struct {
		name      string
		runtime   map[string]any
		flags     []string
		wantCode  int
		wantImage string
		wantErr   string
	}{
		{name: "the config's image", wantImage: "cfg-image"},
		{name: "the job's image wins", runtime: map[string]any{"image": "job-image"}, wantImage: "job-image"},
		{name: "--plugin-dir wins over plugin_dir", flags: []string{"--plugin-dir", empty}, wantCode: exitSystemFailure, wantErr: filepath.Join(empty, "executor-whole")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, jobDir := jobOnlyCommand(t, tc.runtime)
			code, _, stderr := runnerHostBin(t, nil, append([]string{"run", "--config", cfg, "--plugin", "whole", "--job", job}, tc.flags...)...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d", code, tc.wantCode)
			}
			if tc.wantErr != "" {
				if !strings.Contains(stderr, tc.wantErr) {
					t.Errorf("stderr lacks %q", tc.wantErr)
				}
				return
			}
			if rec := readRecordFile(t, jobDir); rec.Image.Alias != tc.wantImage {
				t.Errorf("record's image %q, want %q", rec.Image.Alias, tc.wantImage)
			}
		})
	}
}

// TestConfigFromVMEXEC_CONFIGUnlessTheFlagNamesAnother: with no --config,
// VMEXEC_CONFIG names the file; --config wins over it.
func TestConfigFromVMEXEC_CONFIGUnlessTheFlagNamesAnother(t *testing.T) {
	fromEnv := configFile(t, "[runtime]\nimage = \"env-image\"\n")
	fromFlag := configFile(t, "[runtime]\nimage = \"flag-image\"\n")
	job, _ := jobOnlyCommand(t, nil)
	env := []string{envConfig + "=" + fromEnv}
	if got := shownValues(t, env, "--job", job)["runtime.image"]; got != [2]string{`"env-image"`, "config " + fromEnv + ":2"} {
		t.Errorf("with %s: runtime.image %v, want the variable's file's", envConfig, got)
	}
	if got := shownValues(t, env, "--job", job, "--config", fromFlag)["runtime.image"]; got != [2]string{`"flag-image"`, "config " + fromFlag + ":2"} {
		t.Errorf("with %s and --config: runtime.image %v, want the flag's file's", envConfig, got)
	}
}

// TestConfigRefusesAnUnknownKeyOrABadValueNamingFileLineAndValue: the
// config is read as strictly as a job file, by every verb that reads it:
// an unknown key (or one in the wrong letter case) is named with its line
// and a did-you-mean; a bad value goes through shared's checks and is
// named with the file and line; nothing runs.
func TestConfigRefusesAnUnknownKeyOrABadValueNamingFileLineAndValue(t *testing.T) {
	job, jobDir := jobOnlyCommand(t, nil)
	for _, tc := range []struct {
		name, content string
		want          string // after "config FILE, "
	}{
		{"unknown key", "[runtime]\nimage = \"x\"\nimag = \"y\"\n", `line 3: unknown key "runtime.imag" (did you mean "runtime.image"?)`},
		{"key in the wrong case", "[remote]\nHost = \"h\"\n", `line 2: unknown key "remote.Host" (did you mean "remote.host"?)`},
		{"unknown table", "[runtim]\nimage = \"x\"\n", `line 1: unknown key "runtim" (did you mean "runtime"?)`},
		{"unknown key in an inline table", "[runtime]\nlimits = { cpu = 1, memroy = \"1GiB\" }\n", `line 2: unknown key "runtime.limits.memroy" (did you mean "runtime.limits.memory"?)`},
		{"bad memory", "[runtime]\nimage = \"x\"\n\n[runtime.limits]\nmemory = \"2XB\"\n", `line 5: runtime.limits.memory "2XB" has unit "XB"`},
		{"bad instance type", "[runtime]\ninstance_type = \"vm\"\n", `line 2: runtime.instance_type "vm" is not one of`},
		{"host with a space", "[remote]\nhost = \"ci host\"\n", `line 2: remote.host "ci host" is not one token`},
		{"relative work dir", "[remote]\nwork_dir = \"pikaci\"\n", `line 2: remote.work_dir "pikaci" is not absolute`},
		{"bad endpoint", "[remote.incus]\nendpoint = \"http://h:8443\"\n", `line 2: remote.incus.endpoint "http://h:8443"`},
		{"bad artifacts cap", "[artifacts]\nmax_bytes = -1\n", `line 2: artifacts.max_bytes -1`},
		{"bad log level", "log_level = \"loud\"\n", `line 1: log_level "loud"`},
		{"wrong type", "[runtime]\nready_timeout_secs = \"60\"\n", `line 2, column 22: runtime.ready_timeout_secs: a TOML string cannot go into int`},
		{"not TOML", "[runtime\n", `line 1, column 9: expected ']' to close table name`},
		{"key given twice", "log_level = \"info\"\nlog_level = \"warn\"\n", `line 2, column 1: log_level: key log_level is already defined`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configFile(t, tc.content)
			for _, verb := range [][]string{
				{"run", "--plugin-dir", pluginDir(t, "whole"), "--plugin", "whole", "--job", job},
				{"check", "--job", job},
				{"config", "show", "--job", job},
				{"sweep", "--older-than", "6h"},
			} {
				code, _, stderr := runnerHostBin(t, nil, append(verb, "--config", cfg)...)
				if code != exitSystemFailure {
					t.Errorf("%s: exit %d, want %d", verb[0], code, exitSystemFailure)
				}
				if want := "config " + cfg + ", " + tc.want; !strings.Contains(stderr, want) {
					t.Errorf("%s: stderr lacks %q", verb[0], want)
				}
			}
			if _, err := os.Stat(filepath.Join(jobDir, "pikaci-execution.json")); err == nil {
				t.Error("a run record was written: the job ran with a bad config")
			}
		})
	}
}

// TestConfigPinsRefuseAPluginUnlessTheFlagPinsItOtherwise: require_sha256
// in the config pins a plugin as --require-sha256 does; the flag's pin of
// the same plugin wins over it.
func TestConfigPinsRefuseAPluginUnlessTheFlagPinsItOtherwise(t *testing.T) {
	dir := pluginDir(t, "whole")
	right := sha256File(t, filepath.Join(dir, "executor-whole"))
	wrong := strings.Repeat("0", 64)
	cfg := configFile(t, "plugin_dir = \""+dir+"\"\n\n[require_sha256]\nwhole = \""+wrong+"\"\n\n[runtime]\nimage = \"bb\"\n")
	job, _ := jobOnlyCommand(t, nil)
	code, _, stderr := runnerHostBin(t, nil, "run", "--config", cfg, "--plugin", "whole", "--job", job)
	if code != exitSystemFailure || !strings.Contains(stderr, wrong) {
		t.Errorf("config pin %s: exit %d, stderr lacks the pin; want the plugin refused", wrong, code)
	}
	code, _, _ = runnerHostBin(t, nil, "run", "--config", cfg, "--plugin", "whole", "--job", job, "--require-sha256", "whole="+right)
	if code != 0 {
		t.Errorf("--require-sha256 whole=%s over the config's pin: exit %d, want 0", right, code)
	}
	got := shownValues(t, nil, "--config", cfg, "--job", job, "--require-sha256", "whole="+right)["require_sha256.whole"]
	if want := [2]string{`"` + right + `"`, "flag --require-sha256"}; got != want {
		t.Errorf("config show: require_sha256.whole %v, want %v", got, want)
	}
}

// TestHelpConfigListsConfigShowsFlags: `help config` prints config show's
// usage and flags, --config among them.
func TestHelpConfigListsConfigShowsFlags(t *testing.T) {
	code, _, stderr := runnerHostBin(t, nil, "help", "config")
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	for _, w := range []string{"usage: runner-host config show --job FILE", "-config string", envConfig, "-json"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("help config lacks %q", w)
		}
	}
}

// TestConfigFileThatIsAFIFOIsRefusedWithoutWaiting: a config path naming a
// FIFO (or anything else that is not a regular file) is refused at once,
// not read until a writer comes.
func TestConfigFileThatIsAFIFOIsRefusedWithoutWaiting(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "runner.toml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := readConfig(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("readConfig(FIFO) = %v, want a refusal", err)
		}
	case <-time.After(30 * time.Second):
		// Unblock the reader so that the test ends.
		if fh, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			_ = fh.Close()
		}
		t.Fatal("readConfig of a FIFO still waiting after 30 s")
	}
}

// TestConfigWithoutRuntimeLeavesAJobWithoutRuntimeRefused: a job file with
// a command and no runtime takes the config's [runtime]; when the config
// has none, the job is refused naming both files.
func TestConfigWithoutRuntimeLeavesAJobWithoutRuntimeRefused(t *testing.T) {
	cfg := configFile(t, "[artifacts]\nmax_files = 5\n")
	job, _ := jobOnlyCommand(t, nil)
	code, _, stderr := runnerHostBin(t, nil, "config", "show", "--config", cfg, "--job", job)
	want := "job file " + job + " has a command but no runtime (and config " + cfg + " has no [runtime])"
	if code != exitSystemFailure || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr lacks %q", code, want)
	}
}

// TestSweepTakesHostAndProjectFromTheConfigOrRefusesWithout: sweep with a
// config file takes remote.host and remote.incus.project from it; a config
// naming neither leaves --host required, as without a config.
func TestSweepTakesHostAndProjectFromTheConfigOrRefusesWithout(t *testing.T) {
	empty := t.TempDir()
	noRemote := configFile(t, "log_level = \"info\"\n")
	code, _, stderr := runnerHostBin(t, nil, "sweep", "--config", noRemote, "--plugin-dir", empty, "--older-than", "6h")
	if want := "--host is required (or remote.host in the config file)"; code != exitUsage || !strings.Contains(stderr, want) {
		t.Errorf("config without [remote]: exit %d, stderr lacks %q", code, want)
	}
	withRemote := configFile(t, "[remote]\nhost = \"cfg-host\"\n\n[remote.incus]\nproject = \"cfg-project\"\n")
	// The host and project are taken: what fails next is loading the
	// plugin from an empty plugin dir.
	code, _, stderr = runnerHostBin(t, nil, "sweep", "--config", withRemote, "--plugin-dir", empty, "--older-than", "6h")
	if want := filepath.Join(empty, "executor-remote-linux-vm"); code != exitSystemFailure || !strings.Contains(stderr, want) {
		t.Errorf("config with [remote]: exit %d, stderr lacks %q", code, want)
	}
}

// TestConfigOfAnyShapeMergesUnderAJob: an empty file, comments only, empty
// tables, a table holding only a subtable: each decodes and merges under a
// job (the job's values unchanged), with nothing to add.
func TestConfigOfAnyShapeMergesUnderAJob(t *testing.T) {
	job, _ := jobOnlyCommand(t, map[string]any{"image": "job-image"})
	raw, err := (&App{}).readJobRaw(job)
	if err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{
		"",
		"# only a comment\n",
		"[remote]\n",
		"[remote.incus]\n",
		"[runtime.limits]\n",
		"[artifacts]\n[require_sha256]\n",
		"log_level = \"info\"\n",
		"[runtime]\nlimits = {}\nprofiles = []\n",
	} {
		cfg, err := decodeConfig([]byte(content), filepath.Join(t.TempDir(), "runner.toml"))
		if err != nil {
			t.Errorf("%q: %v", content, err)
			continue
		}
		merged, err := mergeJob(raw, cfg)
		if err != nil {
			t.Errorf("%q: merge: %v", content, err)
			continue
		}
		if diff := cmp.Diff(raw, merged); diff != "" {
			t.Errorf("%q changed the job (-job +merged):\n%s", content, diff)
		}
	}
}

// TestSweepTakesTheConfigsEndpointOnlyForTheConfigsHost: the config's
// Incus endpoint (and certificates) belong to its remote.host; a --host
// naming another host does not take them, else an https endpoint would
// sweep the config's host's instances and then the other host's disk.
func TestSweepTakesTheConfigsEndpointOnlyForTheConfigsHost(t *testing.T) {
	path := configFile(t, "[remote]\nhost = \"a\"\n\n[remote.incus]\nproject = \"p\"\nendpoint = \"https://a.example:8443\"\n")
	for _, tt := range []struct{ host, wantEndpoint string }{
		{"", "https://a.example:8443"},
		{"a", "https://a.example:8443"},
		{"b", ""},
	} {
		var f sweepFlags
		f.config, f.remote.Host = path, tt.host
		if err := f.withConfig(&App{}); err != nil {
			t.Fatalf("--host %q: %v", tt.host, err)
		}
		if f.remote.Incus.Endpoint != tt.wantEndpoint {
			t.Errorf("--host %q: endpoint %q, want %q", tt.host, f.remote.Incus.Endpoint, tt.wantEndpoint)
		}
	}
}

// TestConfigShowHidesEnvValues: config show names each command.env entry
// and where it came from, never its value (a job's environment often holds
// tokens, and the output lands in logs), as text and as JSON.
func TestConfigShowHidesEnvValues(t *testing.T) {
	const secret = "s3cret-token-value"
	job, _ := wholeJobFile(t, "env", []string{"exit", "0"}, func(m map[string]any) {
		m["command"].(map[string]any)["env"] = map[string]any{"API_TOKEN": secret}
	})
	got := shownValues(t, nil, "--job", job)["command.env.API_TOKEN"]
	if want := `"(18 bytes, not shown)"`; got[0] != want || !strings.HasPrefix(got[1], "job ") {
		t.Errorf("command.env.API_TOKEN shown as %q from %q; want %s from the job", got[0], got[1], want)
	}
	for _, args := range [][]string{{"config", "show", "--job", job}, {"config", "show", "--json", "--job", job}} {
		code, stdout, _ := runnerHostBin(t, nil, args...)
		if code != 0 || strings.Contains(stdout, secret) || !strings.Contains(stdout, "API_TOKEN") {
			t.Errorf("%v: exit %d; the output shows the value or lacks the name:\n%s", args, code, stdout)
		}
	}
}
