// Package testbin builds the binaries tests run: plugin binaries loaded
// through go-plugin, runner-host, the conformance command. BuildOnce is the
// one way tests get one: each binary is built at most once per test
// process, on first use, and Main removes them all when the tests end.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Import paths of the binaries tests build.
const (
	// Plugin is our plugin's main package.
	Plugin = "github.com/pikaci/vmexec/plugin/cmd/executor-remote-linux-vm"
	// RunnerHost is the runner CLI.
	RunnerHost = "github.com/pikaci/vmexec/host/cmd/runner-host"
	// Conformance is the conformance command.
	Conformance = "github.com/pikaci/vmexec/testharness/cmd/conformance"
	// TestPlugin is the host's test plugin.
	TestPlugin = "github.com/pikaci/vmexec/host/testdata/testplugin"
	// HungPlugin is a plugin that never handshakes and whose child holds
	// its stdout.
	HungPlugin = "github.com/pikaci/vmexec/host/testdata/hungplugin"
	// BrokenPlugin is our plugin with one fault, chosen by -X main.fault.
	BrokenPlugin = "github.com/pikaci/vmexec/plugin/internal/brokenplugin"
)

// Build runs `go build -o out [-ldflags ldflags] pkg`; pkg is an import path
// or a path relative to the calling test's package directory.
func Build(out, pkg, ldflags string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("find the go command to build %s: %w", pkg, err)
	}
	args := []string{"build", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	args = append(args, pkg)
	if msg, err := exec.Command(goCmd, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// built is one binary, built at most once.
type built struct {
	once sync.Once
	path string
	err  error
}

var (
	mu     sync.Mutex
	dir    string // made on first use, removed by Main
	builds = map[string]*built{}
)

// BuildOnce returns the binary of pkg built with ldflags, named file (a
// plugin's file name is its name: executor-NAME): the first call for these
// builds it, every later one in the same test process returns the same
// path, a failed build fails tb each time. The binary is shared: a test
// that changes it, or needs it in a directory of its own, copies or links
// it. The package's TestMain must be Main (or call RemoveAll), or the
// binaries stay in the temporary directory.
func BuildOnce(tb testing.TB, file, pkg, ldflags string) string {
	tb.Helper()
	if file == "" || strings.ContainsRune(file, '/') {
		tb.Fatalf("testbin.BuildOnce: file %q is not one file name", file)
	}
	key := strconv.Quote(pkg) + " " + strconv.Quote(ldflags) + " " + file
	mu.Lock()
	if err := makeDir(); err != nil {
		mu.Unlock()
		tb.Fatal(err)
	}
	b, ok := builds[key]
	if !ok {
		b = &built{path: filepath.Join(dir, strconv.Itoa(len(builds)), file)}
		builds[key] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.err = Build(b.path, pkg, ldflags) })
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// makeDir makes the folder of the binaries once; mu is held.
func makeDir() error {
	if dir != "" {
		return nil
	}
	d, err := os.MkdirTemp("", "testbin-")
	if err != nil {
		return err
	}
	dir = d
	return nil
}

// TempDir returns a new folder that lives as long as the binaries (until
// Main returns), for files shared by the tests of a process.
func TempDir(tb testing.TB) string {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if err := makeDir(); err != nil {
		tb.Fatal(err)
	}
	d, err := os.MkdirTemp(dir, "tmp-")
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// Install links (or copies) the binary BuildOnce built into dir as file
// and returns its path: for a test that needs it in a folder of its own.
func Install(tb testing.TB, dir, file, pkg, ldflags string) string {
	tb.Helper()
	from := BuildOnce(tb, file, pkg, ldflags)
	to := filepath.Join(dir, file)
	if err := os.Link(from, to); err == nil {
		return to
	}
	data, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		tb.Fatal(err)
	}
	return to
}

// RemoveAll removes every binary BuildOnce built.
func RemoveAll() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		_ = os.RemoveAll(dir)
		dir = ""
		builds = map[string]*built{}
	}
}

// Main runs the tests, removes the binaries BuildOnce built and returns the
// exit code: TestMain is `func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }`.
func Main(m *testing.M) int {
	defer RemoveAll()
	return m.Run()
}
