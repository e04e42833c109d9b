package testharness

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/pikaci/vmexec/shared"
)

// RunExecutor runs every configured case (v1 and whole-job) against impl as a subtest of t,
// with no binary to build: impl is served over go-plugin's in-memory gRPC
// connection, so every call crosses the same gRPC adapters, and every
// error the same status mapping, as with a real plugin process. cfg.Plugin
// is ignored.
//
// This is the harness for Go plugin authors, in the manner of Nomad's
// driver harness:
//
//	func TestConformance(t *testing.T) {
//		testharness.RunExecutor(t, myplugin.New(nil), testharness.Config{})
//	}
func RunExecutor(t *testing.T, impl shared.Executor, cfg Config) {
	t.Helper()
	cs, err := LoadCases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := LoadWholeCases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The highest protocol impl speaks, as a host would negotiate.
	versions := shared.ServedVersions(impl)
	set := versions[shared.ProtocolVersion]
	if s, ok := versions[shared.ProtocolWholeJob]; ok {
		set = s
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, set)
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(shared.PluginName)
	if err != nil {
		t.Fatalf("dispense the executor over in-memory gRPC: %v", err)
	}
	p, ok := raw.(shared.Executor)
	if !ok {
		t.Fatalf("dispensed %T, not a shared.Executor", raw)
	}
	runAll(t, p, cs, ws, false)
}
