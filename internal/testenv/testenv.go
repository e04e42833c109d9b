// Package testenv is the one place for the rule every test that needs
// something from its machine follows (root, a program such as sshd, bash or
// GNU readlink, a daemon such as LXD): when it is missing the test skips,
// except under CI=true, where no integration test may skip and a missing
// need fails the test instead. `.ci/run` runs `make test` with CI=true, so
// an environment that lost a dependency turns red rather than quietly
// running fewer tests.
//
// Use it from fixtures (internal/sshdtest, internal/lxdtest) and from any
// test that checks for a program before it runs:
//
//	if _, err := exec.LookPath("bash"); err != nil {
//		testenv.SkipUnlessCI(t, "bash not found")
//	}
//
// A skip that does not depend on the machine (testing.Short, a case that
// declares itself skipped) is not this package's business.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// CI reports whether the tests run under CI=true, where integration tests
// may not skip.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipUnlessCI skips tb, saying reason; under CI=true it fails tb with
// reason instead. Either way the test stops here.
func SkipUnlessCI(tb testing.TB, reason string) {
	tb.Helper()
	if CI() {
		tb.Fatal(reason + " (CI=true: integration tests may not skip)")
		return // a real TB never gets here
	}
	tb.Skip(reason)
}

// SkipUnlessCIf is SkipUnlessCI with a formatted reason.
func SkipUnlessCIf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	SkipUnlessCI(tb, fmt.Sprintf(format, args...))
}
