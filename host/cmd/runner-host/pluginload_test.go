package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pikaci/vmexec/internal/testbin"
	"github.com/pikaci/vmexec/shared"
)

// TestPluginNameOutsidePluginDirRefused (attack 11): --plugin names one file in --plugin-dir.
// A name that would reach a binary outside it (or is no file name at all)
// is refused before anything runs, with an error naming the value; the
// binary outside is never run.
func TestPluginNameOutsidePluginDirRefused(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(testPlugin(t), filepath.Join(dir, "executor-remote-linux-vm")); err != nil {
		t.Fatal(err)
	}
	// The binary an escaping name reaches: it leaves a mark when run.
	mark := filepath.Join(root, "ran")
	evil := "#!/bin/sh\ntouch '" + mark + "'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(root, "executor-evil"), []byte(evil), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("/tmp", "executor-evil-"+filepath.Base(root)), []byte(evil), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(filepath.Join("/tmp", "executor-evil-"+filepath.Base(root))) })
	job := writeJob(t, testSpec("job"), nil)

	names := []string{
		"a/../../executor-evil",
		"../executor-evil",
		"../evil",
		"/tmp/executor-evil-" + filepath.Base(root),
		root + "/executor-evil",
		"",
		".",
		"..",
		"remote-linux-vm/",
		"evil\x00x",
		"evil\nx",
		"evil\u202ex",
		"evil\u0085x",
		"\xff",
	}
	for _, name := range names {
		for _, verb := range []string{"run"} { // dev moved to the demo binary (testharness/cmd/demo)
			t.Run(verb+"/"+shared.Show(name), func(t *testing.T) {
				args := []string{verb, "--plugin-dir", dir, "--plugin", name, "--dry-run", "--phases", "prepare-directories"}
				if verb == "run" {
					args = append(args, "--job", job)
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
				if _, err := os.Stat(mark); err == nil {
					t.Fatalf("a binary outside --plugin-dir ran")
				}
			})
		}
	}

	// The same names are refused as pins.
	for _, name := range []string{"../evil", "a/../../executor-evil", "."} {
		code, _, stderr := runMain(t, "plugins", "--plugin-dir", dir, "--require-sha256", name+"="+strings.Repeat("0", 64))
		if code != exitUsage || !strings.Contains(stderr, shared.Show(name)) {
			t.Errorf("--require-sha256 %s: exit %d, stderr %q", name, code, stderr)
		}
	}

	// A plain name still runs, and a file that is not a plugin is refused.
	if code, _, _ := runMain(t, "run", "--plugin-dir", dir, "--plugin", "remote-linux-vm", "--job", job, "--dry-run"); code != exitOK {
		t.Errorf("a plain plugin name: exit %d", code)
	}
	if err := os.Mkdir(filepath.Join(dir, "executor-adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, "run", "--plugin-dir", dir, "--plugin", "adir", "--job", job, "--dry-run")
	if code != exitSystemFailure || !strings.Contains(stderr, `plugin "adir"`) || !strings.Contains(stderr, "not an executable regular file") {
		t.Errorf("a directory as plugin: exit %d, stderr %q", code, stderr)
	}
}

// TestSIGTERMDuringLoadLeavesNoPlugin (attack 10): the runner-host binary, loading a plugin
// that never handshakes and whose child holds its stdout, gets SIGTERM. It
// exits non-zero without waiting for the start timeout, and neither the
// plugin nor its child is left running.
func TestSIGTERMDuringLoadLeavesNoPlugin(t *testing.T) {
	runnerHost := testbin.BuildOnce(t, "runner-host", testbin.RunnerHost, "")
	dir := t.TempDir()
	testbin.Install(t, dir, "executor-hung", testbin.HungPlugin, "")

	var stderr bytes.Buffer
	cmd := exec.Command(runnerHost, "plugins", "--plugin-dir", dir)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	// Once the plugin and its child run, runner-host is waiting for the
	// handshake (for up to 30 s, its default start timeout).
	pidFile := filepath.Join(dir, "hung.pids")
	var pids []int
	for deadline := time.Now().Add(time.Minute); pids == nil; {
		if data, err := os.ReadFile(pidFile); err == nil {
			for _, f := range strings.Fields(string(data)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("%s: %q", pidFile, data)
				}
				pids = append(pids, pid)
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("the hung plugin never started; runner-host stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A guard against a hang, well under the 30 s start timeout.
	var err error
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("runner-host still ran 20 s after SIGTERM; stderr:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() <= 0 {
		t.Errorf("runner-host ended with %v, want a non-zero exit", err)
	}
	if !strings.Contains(stderr.String(), "plugin hung") || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr does not say the load of plugin hung was interrupted:\n%s", stderr.String())
	}
	for _, pid := range pids {
		if !processGone(t, pid) {
			t.Errorf("pid %d of the hung plugin's group still runs", pid)
		}
	}
}

// processGone waits until pid no longer runs: its /proc entry is gone, or
// it is a zombie waiting for a parent that is not ours.
func processGone(tb testing.TB, pid int) bool {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if os.IsNotExist(err) {
			return true
		}
		if err != nil {
			tb.Fatalf("read /proc/%d/stat: %v", pid, err)
		}
		i := bytes.LastIndexByte(data, ')')
		if i > 0 && i+2 < len(data) && (data[i+2] == 'Z' || data[i+2] == 'X') {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
