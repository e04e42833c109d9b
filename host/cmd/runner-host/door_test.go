package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/shared"
)

// verbCall is one way a runner-host verb loads a plugin: args loads the
// plugin named name from dir.
type verbCall struct {
	name string
	args func(t *testing.T, dir, name string) []string
}

// loadingVerbs are the verbs, and the two kinds of run, that load a plugin.
var loadingVerbs = []verbCall{
	{"plugins", func(t *testing.T, dir, _ string) []string {
		return []string{"plugins", "--plugin-dir", dir}
	}},
	{"run-v1", func(t *testing.T, dir, name string) []string {
		return []string{"run", "--plugin-dir", dir, "--plugin", name, "--job", writeJob(t, testSpec("job"), nil)}
	}},
	{"run-whole", func(t *testing.T, dir, name string) []string {
		job, _ := wholeJobFile(t, "job", []string{"ok"}, nil)
		return []string{"run", "--plugin-dir", dir, "--plugin", name, "--job", job}
	}},
	{"sweep", func(t *testing.T, dir, name string) []string {
		return []string{"sweep", "--plugin-dir", dir, "--plugin", name, "--host", "h", "--project", "p", "--older-than", "1h"}
	}},
}

// TestEveryVerbBoundsAHungPluginByStartTimeout: every verb that loads a
// plugin (plugins, run of a v1 job, run of a whole job, sweep) opens it the
// same way: a plugin that never handshakes, whose child holds its stdout,
// is given up at --start-timeout, with an error naming the plugin and the
// timeout, and its process group is gone. (The whole job and sweep once
// built the path by hand and ignored --start-timeout: they waited the
// default 30 s.)
func TestEveryVerbBoundsAHungPluginByStartTimeout(t *testing.T) {
	for _, v := range loadingVerbs {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel() // each waits out its start timeout
			dir := t.TempDir()
			testbin.Install(t, dir, "executor-hung", testbin.HungPlugin, "")
			args := append(v.args(t, dir, "hung"), "--start-timeout", "2s")
			type result struct {
				code           int
				stdout, stderr string
			}
			done := make(chan result, 1)
			go func() {
				code, stdout, stderr := runMain(t, args...)
				done <- result{code, stdout, stderr}
			}()
			var r result
			// A guard against a hang, below the default start timeout (30 s)
			// that a verb ignoring --start-timeout would wait.
			select {
			case r = <-done:
			case <-time.After(25 * time.Second):
				killHung(t, dir)
				<-done
				t.Fatalf("runner-host %s still loading the hung plugin after 25 s, with --start-timeout 2s", v.name)
			}
			if r.code == exitOK {
				t.Errorf("exit %d, want a failure", r.code)
			}
			if want := "plugin hung"; !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "start timeout 2s") {
				t.Errorf("stderr does not name plugin hung and its start timeout 2s:\n%s", r.stderr)
			}
			for _, pid := range hungPids(t, dir) {
				if !processGone(t, pid) {
					t.Errorf("pid %d of the hung plugin's group still runs", pid)
				}
			}
		})
	}
}

// hungPids reads the pids the hung plugin wrote next to itself: itself and
// its child.
func hungPids(t *testing.T, dir string) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "hung.pids"))
	if err != nil {
		t.Fatalf("the hung plugin never ran: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("hung.pids: %q", data)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("hung.pids: %q", data)
	}
	return pids
}

// killHung kills what the hung plugin started, after a failed test.
func killHung(t *testing.T, dir string) {
	if data, err := os.ReadFile(filepath.Join(dir, "hung.pids")); err == nil {
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// TestEveryVerbRefusesAPluginNameOutsidePluginDir: every verb that loads
// a plugin by name (run of a v1 job, run of a whole job, sweep; plugins
// takes names only as --require-sha256 pins) refuses a name that is not
// one file name, naming the value, before anything runs; and a name whose
// executor-NAME in --plugin-dir is not an executable regular file (a
// directory, a file without x bits) fails naming it, running nothing.
func TestEveryVerbRefusesAPluginNameOutsidePluginDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(root, "ran")
	evil := "#!/bin/sh\ntouch '" + mark + "'\nexit 1\n"
	for _, f := range []string{filepath.Join(root, "executor-evil"), filepath.Join(dir, "evil"), filepath.Join(dir, "executor-noexec")} {
		if err := os.WriteFile(f, []byte(evil), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "executor-noexec"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "executor-adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range loadingVerbs {
		for _, name := range []string{"../executor-evil", "../evil", root + "/executor-evil", "", ".", "..", "evil/", "evil\x00x", "evil\u202ex"} {
			t.Run(v.name+"/"+shared.Show(name), func(t *testing.T) {
				var args []string
				if v.name == "plugins" && name == "" {
					t.Skip(`--require-sha256 "=HEX" is refused as not NAME=HEX`)
				}
				if v.name == "plugins" {
					args = []string{"plugins", "--plugin-dir", dir, "--require-sha256", name + "=" + strings.Repeat("0", 64)}
				} else {
					args = v.args(t, dir, name)
				}
				code, stdout, stderr := runMain(t, args...)
				if code != exitUsage {
					t.Errorf("exit code %d, want %d", code, exitUsage)
				}
				if want := "plugin name " + shared.Show(name); !strings.Contains(stderr, want) {
					t.Errorf("stderr does not name the value: want %q in\n%s", want, stderr)
				}
				if stdout != "" {
					t.Errorf("stdout %q: a refused plugin name ran something", stdout)
				}
			})
		}
		if v.name == "plugins" {
			continue // it lists only executable executor-* files
		}
		for _, name := range []string{"adir", "noexec", "evil", "missing"} {
			t.Run(v.name+"/"+name, func(t *testing.T) {
				code, stdout, stderr := runMain(t, v.args(t, dir, name)...)
				if code != exitSystemFailure || !strings.Contains(stderr, `plugin "`+name+`"`) || stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr %q: want %d and an error naming plugin %q", code, stdout, stderr, exitSystemFailure, name)
				}
			})
		}
	}
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("a binary that is not the plugin --plugin names in --plugin-dir ran")
	}
}
