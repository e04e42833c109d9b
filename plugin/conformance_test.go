package plugin_test

import (
	"testing"

	"github.com/pikaci/vmexec/plugin"
	"github.com/pikaci/vmexec/testharness"
)

// TestConformanceInProcess runs every built-in conformance case against the
// executor value over go-plugin's in-memory gRPC connection, as a Go plugin
// author would (testharness.RunExecutor): no binary is built.
func TestConformanceInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a virtual remote host per case")
	}
	e := plugin.New(nil)
	t.Cleanup(func() { _ = e.Close() })
	testharness.RunExecutor(t, e, testharness.Config{})
}
