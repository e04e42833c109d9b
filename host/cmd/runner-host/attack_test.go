package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/shared"
)

// TestAttack11_PluginNameEscape: --plugin names one file in --plugin-dir.
// A name that would reach a binary outside it (or is no file name at all)
// is refused before anything runs, with an error naming the value; the
// binary outside is never run.
func TestAttack11_PluginNameEscape(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "plugins")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(testPlugin, filepath.Join(dir, "executor-remote-linux-vm")); err != nil {
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
		for _, verb := range []string{"run", "dev"} {
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
	if code != exitFail || !strings.Contains(stderr, `plugin "adir"`) || !strings.Contains(stderr, "not an executable regular file") {
		t.Errorf("a directory as plugin: exit %d, stderr %q", code, stderr)
	}
}
