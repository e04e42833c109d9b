// Package testbin builds the binaries tests run: plugin binaries loaded
// through go-plugin, the conformance command.
package testbin

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
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

// Must is Build that fails tb, returning out.
func Must(tb testing.TB, out, pkg string) string {
	tb.Helper()
	if err := Build(out, pkg, ""); err != nil {
		tb.Fatal(err)
	}
	return out
}

// Plugin is the import path of our plugin's main package.
const Plugin = "github.com/pikaci/vmexec/plugin/cmd/executor-remote-linux-vm"
