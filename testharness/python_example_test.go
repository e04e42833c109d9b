package testharness_test

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pikaci/vmexec/internal/testenv"
	"github.com/pikaci/vmexec/testharness"
)

// TestPythonExampleWithoutASafetyFeatureFailsItsCase: the Python example
// (examples/python-plugin) passes every case (make conformance-python);
// here a copy with one safety feature taken out fails the safety case
// named for it, so the harness is the gate its README says it is.
func TestPythonExampleWithoutASafetyFeatureFailsItsCase(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: runs the Python example (make test runs it)")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import asyncssh, grpc, cryptography").Run(); err != nil {
		testenv.SkipUnlessCIf(t, "the Python example needs Debian's python3-asyncssh, python3-grpcio, python3-cryptography (scripts/install-test-deps): %v", err)
	}
	for _, tt := range []struct {
		name     string
		file     string // under pikaci_example/
		old, new string // the one change that takes the feature out
		run      string // the case that must fail
	}{
		{
			name: "host-key checking",
			file: "remote.py", old: "known_hosts=known,", new: "known_hosts=None,",
			run: "safety-host-key-unknown",
		},
		{
			name: "the dial bound",
			file: "remote.py", old: "keepalive_interval=30), limit)", new: "keepalive_interval=30), None)",
			run: "safety-silent-remote-connect-timeout",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bin := copyPythonExample(t)
			p := filepath.Join(filepath.Dir(bin), "pikaci_example", tt.file)
			src, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(src), tt.old); n != 1 {
				t.Fatalf("%s holds %q %d times, want once: the example changed, update this test", tt.file, tt.old, n)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(src), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := testharness.Config{Plugin: bin, Cases: "-", Run: regexp.MustCompile("^" + regexp.QuoteMeta(tt.run) + "$")}
			results, err := testharness.RunCases(t.Context(), cfg, nil)
			if err != nil || len(results) != 1 {
				t.Fatalf("%s: %d results, %v", tt.run, len(results), err)
			}
			if r := results[0]; r.Passed || r.Skipped != "" {
				t.Errorf("the example without %s: case %s passed %v, skipped %q; want it failed", tt.name, tt.run, r.Passed, r.Skipped)
			} else {
				t.Logf("case %s failed as it should: %s", tt.run, strings.Join(r.Failures, "; "))
			}
		})
	}
}

// copyPythonExample copies examples/python-plugin into a temp dir and
// returns its launcher's path.
func copyPythonExample(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "examples", "python-plugin")
	dst := filepath.Join(t.TempDir(), "python-plugin")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dst, "executor-python-example")
}
