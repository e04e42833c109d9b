package testharness_test

import (
	"testing"

	"github.com/pikaci/vmexec/testharness"
)

// TestOurPluginPassesEveryWholeCase runs the whole-job cases (and the v1
// cases) against our plugin binary.
func TestOurPluginPassesEveryWholeCase(t *testing.T) {
	t.Parallel()
	testharness.Run(t, testharness.Config{Plugin: realPlugin(t)})
}
